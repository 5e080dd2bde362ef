"""The gateway's FastAPI app under uvicorn, on in-process random-weight scorers, as its own process
(so a test can measure its memory): ``python tests/_http_gateway.py PORT MAX_REQUEST_BYTES``.
The bearer token is read from ``CXRL_API_TOKEN`` as in the services."""

from __future__ import annotations

import sys

import uvicorn

from cxrl.rewards.factory import random_scorers
from services import codec
from services.gateway import Gateway, GatewayArgs
from services.grpc_servicer import server_token
from services.http import create_app


class _Method:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        async def run():
            return self.fn(*args)

        return run()


class _Handle:
    def __init__(self, kind, scorer):
        run = (lambda x, r: scorer(x)) if kind == "posture" else scorer
        self.score = _Method(lambda x, r: (run(codec.as_float(x), r), scorer.info))  # as the replicas do
        self.model_info = _Method(lambda: scorer.info)


def main(port: int, max_request_bytes: int) -> None:
    kinds = ("posture", "diagnostic", "consistency")
    handles = {k: _Handle(k, s) for k, s in zip(kinds, random_scorers(0), strict=True)}
    gateway = Gateway(GatewayArgs(max_request_bytes=max_request_bytes), handles.__getitem__)
    uvicorn.run(create_app(gateway, server_token()), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
