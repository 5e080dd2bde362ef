"""Oversized payloads for the security tests: decompression bombs written as real PNGs without ever
holding the image, and HTTP bodies of any size sent over a raw socket (tests/test_services_*.py)."""

from __future__ import annotations

import struct

# --- decompression bombs --------------------------------------------------------------------------


def png_bomb(width: int, height: int, rows_per_chunk: int = 256) -> bytes:
    """A real, valid 8-bit greyscale PNG of ``width`` x ``height`` black pixels, written row by row
    (the encoder never holds the image): 13,000 x 13,000 is ~170 kB and decodes to 169 MB."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    rows = bytes(rows_per_chunk * (width + 1))  # each row: filter byte 0 + width zero pixels
    idat = []
    for start in range(0, height, rows_per_chunk):
        idat.append(z.compress(rows[: min(rows_per_chunk, height - start) * (width + 1)]))
    idat.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(idat)) + chunk(b"IEND", b"")


# --- large bodies over raw sockets ----------------------------------------------------------------


def post_raw(
    host: str, port: int, path: str, headers: dict[str, str], body_bytes: int, chunked: bool = False
) -> tuple[int, bytes, int]:
    """POST ``body_bytes`` of zeros, 1 MiB at a time, stopping when the server answers or hangs up.
    Returns (status, response body, bytes of the body sent before the answer)."""
    import select
    import socket

    head = [f"POST {path} HTTP/1.1", f"host: {host}:{port}", "content-type: application/json"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append("transfer-encoding: chunked" if chunked else f"content-length: {body_bytes}")
    piece, sent, answer = bytes(1 << 20), 0, b""
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        while sent < body_bytes and not answer:
            if select.select([sock], [], [], 0)[0]:
                answer = sock.recv(65536)
                break
            data = piece[: body_bytes - sent]
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            except OSError:  # the server answered and closed while we were still sending
                break
            sent += len(data)
        if chunked and sent >= body_bytes and not answer:
            sock.sendall(b"0\r\n\r\n")
        answer += _read_response(sock)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return status, answer.partition(b"\r\n\r\n")[2], sent


def _read_response(sock) -> bytes:
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
            if b"\r\n\r\n" in out and out.endswith(b"}"):
                break
    except OSError:
        pass
    return out
