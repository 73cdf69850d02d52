"""Several processes on a machine without the data set download it once: against a local,
throttled HTTP server serving a fake archive in CIFAR-10's real format (no network needed)."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import HARNESS, REPO

from sgdr.testing.cifar_files import write_archive, write_cifar10

CHUNK, PAUSE = 8192, 0.05  # the 160 kB archive takes about a second to arrive


@pytest.fixture
def archive_server(tmp_path):
    """(folder holding the fake archive and its unpacked files, the archive's URL, a function giving the
    downloads served to the end). torchvision first probes for redirects with a GET it closes after the headers: that
    one is cut off, and not counted."""
    staging = write_cifar10(tmp_path / "staging")
    body = write_archive(staging).read_bytes()
    served: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # torchvision looks for redirects first
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()

        def do_GET(self) -> None:
            self.do_HEAD()
            try:
                for start in range(0, len(body), CHUNK):
                    time.sleep(PAUSE)
                    self.wfile.write(body[start : start + CHUNK])
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return
            served.append(self.path)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def downloads() -> list[str]:
        """The downloads served to the end, once every request has been handled (closing the server
        joins its request threads: a client can have its last byte before the server counts it)."""
        server.shutdown()
        server.server_close()
        return served

    yield staging, f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz", downloads
    downloads()


def local_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    return {**env, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}


def test_torchrun_ranks_on_an_empty_data_dir_download_once(archive_server, tmp_path):
    staging, url, downloads = archive_server
    data = tmp_path / "empty"
    run = [
        "-e",
        "1",
        "--train-subset",
        "16",
        "-b",
        "16",
        "--model",
        "wrn-10-1",
        "--seed",
        "1",
        "--data-dir",
        str(data),
        "--output-dir",
        str(tmp_path / "out"),
    ]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(HARNESS),
            str(staging),
            f"url={url}",
            str(REPO / "train.py"),
            *run,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=local_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert downloads() == ["/cifar-10-python.tar.gz"]
    assert "Finished Training" in done.stdout
    assert sorted(p.name for p in (data / "cifar-10-batches-py").iterdir()) == sorted(
        p.name for p in (staging / "cifar-10-batches-py").iterdir()
    )


def test_several_processes_fetching_at_once_download_once(archive_server, tmp_path):
    staging, url, downloads = archive_server
    data = tmp_path / "empty"
    command = [
        sys.executable,
        str(HARNESS),
        str(staging),
        f"url={url}",
        str(REPO / "sgdr" / "data" / "__main__.py"),
        "--seed",
        "3",
        "--data-dir",
        str(data),
        "-e",
        "2",
    ]  # train.py's flags; the data ones are used
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=local_env())
        for _ in range(3)
    ]
    results = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], [err[-2000:] for _, err in results]
    assert downloads() == ["/cifar-10-python.tar.gz"]
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        assert (data / "cifar-10-batches-py" / name).read_bytes() == (
            staging / "cifar-10-batches-py" / name
        ).read_bytes()


def test_complete_data_in_a_read_only_folder_is_only_read(tiny_cifar, monkeypatch, tmp_path):
    import shutil

    import sgdr.data.__main__ as fetch_data
    from sgdr.data import cifar
    from sgdr.testing.cifar_files import use_checksums_of

    data = tmp_path / "read-only"
    shutil.copytree(tiny_cifar / "cifar-10-batches-py", data / "cifar-10-batches-py")
    use_checksums_of(data, monkeypatch.setattr)
    data.chmod(0o555)
    try:
        assert fetch_data.main(["--data-dir", str(data), "--seed", "1"]) == 0
        assert len(cifar.load_cifar(data, train=True)) == 40
    finally:
        data.chmod(0o755)
    assert sorted(p.name for p in data.iterdir()) == ["cifar-10-batches-py"]


def test_an_archive_left_half_written_is_downloaded_again(archive_server, tmp_path, monkeypatch):
    from sgdr.data import cifar
    from sgdr.testing.cifar_files import use_checksums_of

    staging, url, downloads = archive_server
    use_checksums_of(staging, monkeypatch.setattr)
    monkeypatch.setattr(cifar.CIFAR10, "url", url)
    data = tmp_path / "data"
    data.mkdir()
    archive = (staging / "cifar-10-python.tar.gz").read_bytes()
    (data / "cifar-10-python.tar.gz").write_bytes(archive[: len(archive) // 2])  # a download killed halfway
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert len(cifar.load_cifar(data, train=False)) == 16
    assert downloads() == ["/cifar-10-python.tar.gz"]
    assert (data / "cifar-10-python.tar.gz").read_bytes() == archive
