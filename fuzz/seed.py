#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs into fuzz/corpus/<target>/ from the project's own
material: the differential corpus (tests/corpus/*.txt) as request streams, replies of the
shapes Redis sends, stored values in the compression envelope, the heads of the shipped traces,
and the example configuration. Run from the repository root. libFuzzer grows the corpus from
these; what is committed is that corpus minimized (`cargo fuzz cmin`). See CONTRIBUTING.md.
"""
import gzip
import os
import shlex
import struct
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def multibulk(args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def words(line):
    try:
        parts = shlex.split(line, posix=True)
    except ValueError:
        return None
    return [p.encode("utf-8", "surrogateescape") for p in parts]


def corpus_streams():
    """One request stream per differential-corpus sequence (every client's commands)."""
    seqs = []
    for fname in sorted(os.listdir(os.path.join(ROOT, "tests", "corpus"))):
        name = None
        cmds = []
        for line in open(os.path.join(ROOT, "tests", "corpus", fname), encoding="utf-8"):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("==="):
                if cmds:
                    seqs.append((name, cmds))
                name, cmds = line[3:].strip(), []
                continue
            line = line.lstrip("~").strip()
            if line.startswith("["):
                line = line[3:].lstrip("<>").strip()
            if line.startswith("@pipeline"):
                _, n, rest = line.split(" ", 2)
                line = rest.replace("{i}", "0")
            elif line.startswith("@resp3"):
                line = "HELLO 3"
            w = words(line)
            if w:
                cmds.append(w)
        if cmds:
            seqs.append((name, cmds))
    return seqs


def main():
    for i, (name, cmds) in enumerate(corpus_streams()):
        stream = b"".join(multibulk(c) for c in cmds)
        inline = b"".join(b" ".join(c) + b"\r\n" for c in cmds[:8])
        write("request_parser", "seq%03d" % i, bytes([i % 13]) + stream)
        write("request_parser", "inline%03d" % i, bytes([i % 7]) + inline)
        write("session_stream", "seq%03d" % i, bytes([i % 64]) + stream)
    hostile = [
        b"a\x00b\r\nPING\r\n",
        b"*1\x00\r\n$4\r\nPING\r\n",
        b"*1\r\n$4\x00\r\nPING\r\n",
        b"GET a\r\nBLPOP q 1\r\nGET a\r\n",
        b"*10000\r\n",
        b"*1\r\n$999999999\r\n",
        b"set a \"b\\x41\" 'c'\r\n",
        b"MULTI\r\nSET a 1\r\nBLPOP q 0\r\nEXEC\r\n",
        b"SUBSCRIBE ch\r\nPING\r\nRESET\r\nGET a\r\n",
        b"CLIENT REPLY OFF\r\nGET a\r\nCLIENT REPLY ON\r\n",
    ]
    for i, h in enumerate(hostile):
        write("request_parser", "hostile%02d" % i, b"\x03" + h)
        write("session_stream", "hostile%02d" % i, b"\x05" + h)
    replies = [
        b"+OK\r\n", b"-ERR x\r\n", b":12\r\n", b"$3\r\nabc\r\n", b"$-1\r\n", b"*-1\r\n",
        b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n", b"%1\r\n+k\r\n+v\r\n", b"~1\r\n_\r\n",
        b",1.5\r\n", b"#t\r\n", b"(123\r\n", b"=7\r\ntxt:abc\r\n", b">2\r\n+a\r\n+b\r\n",
        b"|1\r\n+a\r\n+b\r\n:1\r\n", b"!3\r\nerr\r\n",
    ]
    for i, r in enumerate(replies):
        write("reply_scanner", "r%02d" % i, bytes([i % 2]) + r * 2)
    magic = b"\xf5PZ"
    for i, v in enumerate([b"", b"hello" * 40, b'{"id": 1, "name": "x"}' * 20]):
        crc = zlib.crc32(v) & 0xFFFFFFFF
        head = lambda codec: magic + bytes([1, codec]) + struct.pack("<II", len(v), crc)
        write("envelope", "stored%d" % i, head(0) + v)
        write("envelope", "zlib%d" % i, head(1) + zlib.compress(v, 1))
        write("envelope", "raw%d" % i, bytes([i]) + v)
    for name in ["nasa_19950801.tsv.gz", "cloudPhysicsIO.oracleGeneral.bin.gz"]:
        with gzip.open(os.path.join(ROOT, "tests", "data", name)) as f:
            write("trace_readers", name[:-3], f.read(2400))
    write("trace_readers", "monitor", b'1700000000.123456 [0 127.0.0.1:5000] "GET" "k"\n')
    write("trace_readers", "csv", b"time,client,key,size\n1.0,1,user:1,10\n")
    with open(os.path.join(ROOT, "conf", "prescient.toml"), "rb") as f:
        write("config_loader", "example", f.read())
    write("config_loader", "small", b'[upstream]\nurl = "redis://u:p@h:1/2"\n')


if __name__ == "__main__":
    main()
