"""A WebSocket caller (Python's `websockets`) of the gateway's WebSocket tests.

Usage: websocket_client.py URL echo COUNT   sends COUNT messages on one connection, checks every echo, prints
                                             "instance NAME" and "ok"
       websocket_client.py URL hold          sends one message, prints "connected NAME", then waits (30 s at most)
                                             for the connection to end and prints "closed CODE"
Exits 1 with the reason on any failure.
"""
import sys

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

url, mode = sys.argv[1], sys.argv[2]


def instance_of(answer, sent):
    name, _, echoed = answer.partition(":")
    if echoed != sent:
        sys.exit(f"sent {sent!r}, got {answer!r}")
    return name


with connect(url, open_timeout=10, close_timeout=5) as connection:
    if mode == "echo":
        names = set()
        for number in range(int(sys.argv[3])):
            message = f"message {number} " + "x" * (number % 97)
            connection.send(message)
            names.add(instance_of(connection.recv(timeout=10), message))
        if len(names) != 1:
            sys.exit(f"one connection reached several instances: {sorted(names)}")
        print("instance", names.pop(), flush=True)
        print("ok", flush=True)
    else:
        connection.send("hello")
        print("connected", instance_of(connection.recv(timeout=10), "hello"), flush=True)
        try:
            connection.recv(timeout=30)
            sys.exit("an unexpected message came")
        except ConnectionClosed as closed:
            print("closed", closed.rcvd.code if closed.rcvd else "none", flush=True)
        except TimeoutError:
            sys.exit("the connection stayed open 30 s after its instance died")
