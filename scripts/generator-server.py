#!/usr/bin/env python3
"""llama.cpp's HTTP server (OpenAI-compatible /v1/completions) on a GGUF, through
PyPI's xllamacpp bindings: the third-party server the external generator is
tested against (scripts/setup-generator-server installs it).

    cache/generator-server/bin/python scripts/generator-server.py MODEL.gguf PORT [--parallel N] [--threads N]

Prints "listening http://127.0.0.1:PORT" once it accepts requests, then serves
until it is killed.
"""
import argparse
import sys
import time

import xllamacpp


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("port", type=int)
    ap.add_argument("--parallel", type=int, default=1, help="sequences decoded together (server slots)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ctx", type=int, default=4096, help="context shared by all slots")
    a = ap.parse_args()
    p = xllamacpp.CommonParams()
    p.model.path = a.model
    p.port = a.port
    p.n_ctx = a.ctx
    p.n_parallel = a.parallel
    p.cpuparams.n_threads = a.threads
    p.cpuparams_batch.n_threads = a.threads
    server = xllamacpp.Server(p)
    print("listening", server.listening_address, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
