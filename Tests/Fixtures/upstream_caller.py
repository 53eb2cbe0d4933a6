"""An application calling a service through a sidecar's local HTTP listener, as a real child process.

upstream_caller.py PORT PATH --calls N --threads T [--kill-pid PID --kill-after K]

T threads share N GET calls to http://127.0.0.1:PORT/PATH, each on its own kept-alive connection (standard
library only). With --kill-pid, the process PID is killed with SIGKILL once K calls have completed: the instance
dies under load, at a known point, without the test having to read this process's output as it runs.
Prints one JSON line at the end: {"completed": N, "failed": F, "errors": [the first few failures]}.
"""
import argparse
import http.client
import json
import os
import signal
import threading

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("path")
parser.add_argument("--calls", type=int, default=2000)
parser.add_argument("--threads", type=int, default=4)
parser.add_argument("--kill-pid", type=int)
parser.add_argument("--kill-after", type=int, default=500)
arguments = parser.parse_args()

lock = threading.Lock()
started = 0
completed = 0
failures = []
killed = False


def take_call():
    global started
    with lock:
        if started >= arguments.calls:
            return False
        started += 1
        return True


def finish_call(failure):
    global completed, killed
    kill_now = False
    with lock:
        completed += 1
        if failure is not None:
            failures.append(failure)
        if arguments.kill_pid and not killed and completed >= arguments.kill_after:
            killed = True
            kill_now = True
    if kill_now:
        os.kill(arguments.kill_pid, signal.SIGKILL)


def caller():
    connection = http.client.HTTPConnection("127.0.0.1", arguments.port, timeout=10)
    while take_call():
        failure = None
        try:
            connection.request("GET", arguments.path)
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                failure = "%d %s" % (response.status, body[:200].decode(errors="replace"))
        except Exception as error:  # every failure counts: a reset, a timeout, a closed connection
            failure = "%s: %s" % (type(error).__name__, error)
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", arguments.port, timeout=10)
        finish_call(failure)
    connection.close()


threads = [threading.Thread(target=caller) for _ in range(arguments.threads)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({"completed": completed, "failed": len(failures), "errors": failures[:10]}), flush=True)
