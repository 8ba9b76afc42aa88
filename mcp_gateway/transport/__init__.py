"""The HTTP edge: raw-ASGI plumbing and the transport checks made before a body is parsed.

`guard` (Host and Origin against DNS rebinding), `limits` (size caps) and `asgi` (the ASGI types,
header lookup, plain responses).
"""
