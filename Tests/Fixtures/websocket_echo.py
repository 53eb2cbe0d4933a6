"""A WebSocket echo server (Python's `websockets`) behind the gateway in its WebSocket tests.

Usage: websocket_echo.py NAME

Listens on a free port of 127.0.0.1 and prints it; answers every message with "NAME:" and the message, so a caller
learns which instance it reached. Runs until killed.
"""
import asyncio
import sys

from websockets.asyncio.server import serve

name = sys.argv[1]


async def echo(connection):
    async for message in connection:
        await connection.send(f"{name}:{message}")


async def main():
    async with serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.get_running_loop().create_future()


asyncio.run(main())
