"""The request that `make compose-check` scores through the compose stack.

    score_request.py --out DIR                                  # write DIR/images/*.png, DIR/reports.txt
    score_request.py --out DIR --http URL --compare GRPC.json   # score them over HTTP, compare

The images are the default world's canonical chest radiograph (shipped in the package) under
four small affine poses, the reports four short findings sentences. Over HTTP the same PNGs go
to ``POST /v1/score`` with the bearer token from ``CXRL_API_TOKEN``; every per-image total must
equal the one ``cxrl score`` got over gRPC (same models, same bytes), and the same request
without the token must get 401.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path

REPORTS = [
    "No acute cardiopulmonary abnormality.",
    "Small left pleural effusion.",
    "Cardiomegaly. No pneumothorax.",
    "Right lower lobe consolidation, likely pneumonia.",
]
POSES = [(0.0, 0, 0), (4.0, 6, 0), (-5.0, -4, 8), (2.0, 0, -6)]  # degrees, dx, dy (pixels)


def write_request(out: Path) -> list[Path]:
    from importlib.resources import files

    from PIL import Image

    canonical = Image.open(files("cxrl") / "assets/default/posture/canonical.png").convert("L")
    (out / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (angle, dx, dy) in enumerate(POSES):
        image = canonical.rotate(angle, translate=(dx, dy), resample=Image.BILINEAR)
        paths.append(out / "images" / f"image{i}.png")
        image.save(paths[-1])
    (out / "reports.txt").write_text("\n".join(REPORTS) + "\n")
    return paths


def post(url: str, body: dict, token: str) -> tuple[int, dict]:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(url.rstrip("/") + "/v1/score", json=body, headers=headers, timeout=120)
    return response.status_code, response.json() if response.content else {}


def score_http(out: Path, url: str, compare: Path) -> int:
    paths = sorted((out / "images").glob("*.png"))
    body = {
        "images": {"encoded": {"images": [base64.b64encode(p.read_bytes()).decode() for p in paths]}},
        "reports": (out / "reports.txt").read_text().splitlines(),
    }
    status, _ = post(url, body, token="")
    if status != 401:
        print(f"score_request: HTTP without the token got {status}, expected 401", file=sys.stderr)
        return 1
    status, answer = post(url, body, token=os.environ.get("CXRL_API_TOKEN", ""))
    if status != 200:
        print(f"score_request: HTTP {status}: {answer}", file=sys.stderr)
        return 1
    http_totals = [r["total"] for r in answer["results"]]
    grpc_totals = [item["total"] for item in json.loads(compare.read_text())["images"]]
    worst = max(abs(a - b) for a, b in zip(http_totals, grpc_totals, strict=True))
    print(
        f"score_request: HTTP totals {[round(t, 4) for t in http_totals]}; largest |HTTP - gRPC| = {worst:.2e}"
    )
    print("score_request: models " + ", ".join(f"{m['name']} {m['version']}" for m in answer["models"]))
    if worst > 1e-5:
        print("score_request: HTTP and gRPC disagree", file=sys.stderr)
        return 1
    print("score_request: without the token, HTTP answers 401")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder of the request files")
    parser.add_argument("--http", help="base URL of the HTTP ingress; score the request there")
    parser.add_argument("--compare", type=Path, help="cxrl score --json output to compare with")
    args = parser.parse_args(argv)
    if args.http:
        if args.compare is None:
            parser.error("--http needs --compare")
        return score_http(args.out, args.http, args.compare)
    paths = write_request(args.out)
    print(f"score_request: {len(paths)} images and reports in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
