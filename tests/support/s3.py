"""A real S3 API for tests: moto's standalone server in its own process on a free port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.process import ChildProcess

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "geopera-test",
    "AWS_SECRET_ACCESS_KEY": "geopera-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer(ChildProcess):
    def __init__(self, home: Path) -> None:
        self.home = home
        self.log_path = home / "moto.log"
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> MotoServer:
        self.home.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # the free port may be taken between the probe and the bind
            self.port = _free_port()
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                    stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip
            self._track()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2).close()
                    return self
                except (urllib.error.URLError, ConnectionError, OSError):
                    time.sleep(0.1)
            self.stop()
        raise RuntimeError(f"moto server did not start:\n{self.log()}")

    def env(self, bucket: str, prefix: str = "geopera") -> dict[str, str]:
        """What a server (and the test process, to seed it) needs to store in `bucket`."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint, "GEOPERA_STORAGE_URL": f"s3://{bucket}/{prefix}"}

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [entry["Key"] for page in pages for entry in page.get("Contents", ())]
