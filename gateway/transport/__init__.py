"""asyncio edges: sockets for SIP (UDP, TCP) and RTP. Protocol logic stays in the sans-IO cores."""
