"""The console life cycle, read top-down: `opening` (what happens when a console opens), `relay_core` (the
relay's decisions, sans-IO), `relay` (its asyncio driver), `registry` (the live consoles), `codes` (the
close-code vocabulary) and `aiohttp_fastpath` (the one door to aiohttp's private parts)."""
