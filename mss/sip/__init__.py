"""SIP signalling, sans-IO."""
