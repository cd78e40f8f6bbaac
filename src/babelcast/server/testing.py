"""Run the app in a background thread on a free loopback port (tests, benchmarks, notebooks).

    with ServerThread(create_app(rec, ServerConfig())) as server:
        ...  # server.http_url, server.ws_url (and server.grpc_target with ServerConfig(grpc_port=0))
"""
from __future__ import annotations

import socket
import threading
import time

import uvicorn

from .runner import uvicorn_config


class ServerThread:
    def __init__(self, app, host: str = "127.0.0.1", start_timeout_s: float = 30.0):
        self.app, self.host, self.start_timeout_s = app, host, start_timeout_s
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))  # the port is ours from now on: no race with other tests
        self.port = self.sock.getsockname()[1]
        cfg = app.state.cfg
        self.server = uvicorn.Server(uvicorn_config(app, cfg))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name=f"uvicorn-{self.port}")

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def grpc_target(self) -> str:
        """host:port of the Riva gRPC service (a config with grpc_port set; 0 picks a free port)."""
        return f"{self.host}:{self.app.state.grpc_port}"

    @property
    def hub(self):
        return self.app.state.hub

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()
