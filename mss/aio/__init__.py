"""The asyncio adapters: the only modules of mss that do socket I/O besides the relay."""
