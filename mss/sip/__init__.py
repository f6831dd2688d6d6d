"""SIP signalling, sans-IO: mss's user agent towards the PSS (the adapter is mss.aio.sip_transport).

Layers, bottom up (each module says which RFC sections it implements):

=================  ==============================================================================
``_grammar``       RFC 3261 §25 character classes and regexes
``uri``            SIP/SIPS URIs, name-addr, Via; ``parse_*`` and ``str()`` are inverses
``message``        Request, Response, Headers; ``parse_message``; ``bytes(msg)``; size bound
``framing``        Content-Length framing on TCP, RFC 5626 keep-alive ping/pong
``checks``         what a UAS refuses first (405, 416, 420, 415, 406)
``transaction``    RFC 3261 §17 client/server × INVITE/non-INVITE, timers A-K (+ RFC 6026 L, M)
``auth``           digest (RFC 7616/2617): MD5, SHA-256, SHA-512-256, -sess, qop auth/auth-int
``dialog``         RFC 3261 §12: tags, route set (loose and strict routing), CSeq, target refresh
``leg``            one outgoing call: CANCEL, BYE, ACK of 2xx, PRACK, our re-INVITE, glare
``session_timer``  RFC 4028 session timers of a leg: 422 retry, who refreshes, when it expires
``offers``         far-end re-INVITE/UPDATE offers of a leg and our 2xx until its ACK
``registration``   REGISTER with refresh and back-off (external line mode)
``events``         what the UA reports to the call flow
``settings``       UASettings (built from mss.config)
``targets``        RFC 3263 §4: where requests go (pss_host entries, SRV/A/AAAA answers, TTLs)
``ua``             UserAgent: the facade, security limits, counters
=================  ==============================================================================

In: RFC 3261 messages (compact forms, folding, multi-value headers, RFC 4475 torture messages),
UDP, TCP and TLS (``;transport=tls``), transactions with every timer, dialogs, CANCEL, BYE both ways,
re-INVITE and UPDATE (RFC 3311) from the far end and our own re-INVITE with 491 back-off, OPTIONS;
RFC 3262 (PRACK of reliable provisionals; mss never sends them); RFC 4028 session timers (both
refresher roles, 422 retry); RFC 3581 rport; digest on INVITE, REGISTER and in-dialog requests with
a no-loop rule; REGISTER with 423 handling and back-off.

Hardening: every header number is bounded in length before ``int()`` (``_grammar.parse_number``);
URI user parts are escaped when written (``#`` is ``%23``) and compared unescaped; live and lingering
state are counted apart (admission counts live legs and transactions only, lingering ones have
their own bound with the oldest dropped, in-dialog requests are always served, out-of-dialog ones
have their own budget); problems come out as rate-limited notices for the adapter's log.

Not in: SIPS URIs, the WebSocket transport, DNS NAPTR (RFC 3263 §4.1), UDP→TCP
switch for large requests (§18.1.1), following 3xx redirects (they end the leg),
merged-request detection (482), incoming calls (always 403), reliable provisionals sent by mss,
RFC 5626 outbound registrations, RFC 3891 Replaces, REFER, SUBSCRIBE/NOTIFY, INFO (405), S/MIME.
"""
