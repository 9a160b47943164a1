"""Serving a trained policy to robots and evaluation clients (`atlas serve`).

The wire protocol is openpi's websocket policy protocol, so `openpi-client` and the evaluation
scripts built on it (openpi's LIBERO example, starVLA, ...) drive an AtlasVLA policy unchanged:
`codec` (msgpack with numpy arrays), `observation` (the accepted keys and the metadata),
`server` (the asyncio server), `cli` (`atlas serve`).
"""
