"""A service for subprocess tests; its name comes from the environment so tests don't collide."""

import os
import time
from pathlib import Path

from amqprpc import rpc


class EchoService:
    name = os.environ.get("ECHO_SERVICE_NAME", "echo")

    @rpc
    def echo(self, value):
        return value

    @rpc
    def pid(self):
        return os.getpid()

    @rpc
    def hold(self, marker_dir: str, timeout: float = 30.0):
        """Say we started (a file named after our pid), then wait for the release file."""
        folder = Path(marker_dir)
        (folder / f"{os.getpid()}.started").touch()
        deadline = time.monotonic() + timeout
        while not (folder / "release").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("never released")
            time.sleep(0.01)
        return os.getpid()

    @rpc
    def crash(self, marker_dir: str):
        """Die mid-call, every time (a poison request): leave a file per run first."""
        (Path(marker_dir) / f"{os.getpid()}.crash").touch()
        os._exit(1)

    @rpc
    def hog(self, marker_dir: str, megabytes: int, memory_cgroup: str | None = None):
        """Allocate (and touch) ``megabytes``: in a memory cgroup, the kernel OOM-kills us.

        Given ``memory_cgroup``, this worker moves into it first, so the cgroup holds only
        the workers that took the request (what is allocated from then on is charged there).
        """
        if memory_cgroup:
            (Path(memory_cgroup) / "cgroup.procs").write_text(str(os.getpid()))
        (Path(marker_dir) / f"{os.getpid()}.hog").touch()
        block = b"x" * (megabytes * 1024 * 1024)
        return len(block)
