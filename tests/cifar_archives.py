"""Small CIFAR archives in the exact official format (python-format pickled batches in a tar.gz),
and a localhost HTTP server to download them from."""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import pickle
import socket
import tarfile
import threading

import numpy as np

from workloads.allcnn.data import SOURCES


def make_archive(path, dataset="cifar10", per_batch=40, test=30, seed=0) -> str:
    """Write an archive laid out like the official one; returns its MD5."""
    source, rng = SOURCES[dataset], np.random.default_rng(seed)

    def batch(n, name):
        labels = rng.integers(0, source.classes, n).tolist()
        d = {b"batch_label": name.encode(), source.label_key: labels,
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
        if dataset == "cifar100":
            d[b"coarse_labels"] = [label // 5 for label in labels]
        return d

    members = {name: batch(per_batch, name) for name in source.train}
    members[source.test] = batch(test, source.test)
    if dataset == "cifar10":
        members["batches.meta"] = {b"label_names": [f"class{i}".encode() for i in range(10)]}
    else:
        members["meta"] = {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                           b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}
    with tarfile.open(path, "w:gz") as tar:
        for name, d in members.items():
            data = pickle.dumps(d, protocol=2)
            info = tarfile.TarInfo(f"{source.folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.md5(path.read_bytes()).hexdigest()


class Server:
    """Serves a folder over HTTP on 127.0.0.1 and counts the requests. Set `cut` to have that many
    of the next responses announce their whole Content-Length, send half and close the connection
    (urllib then reads an early end, not an error), and `ranges` to answer a `Range: bytes=N-`
    request with the rest (206), as the official server does; `asked` holds each request's Range."""

    def __init__(self, folder):
        outer = self
        self.requests, self.cut, self.ranges, self.asked = 0, 0, False, []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                outer.asked.append(self.headers.get("Range"))
                if not (outer.cut or outer.ranges):
                    return super().do_GET()  # whole files, Range ignored
                body = open(self.translate_path(self.path), "rb").read()
                start = int(self.headers["Range"][len("bytes="):-1]) if outer.ranges and self.headers["Range"] else 0
                if start >= len(body) > 0:
                    return self.send_error(416)
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if outer.cut:
                    outer.cut -= 1
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                else:
                    self.wfile.write(body[start:])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
