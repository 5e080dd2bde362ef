"""TLS between cxrl.client and a reward server, with certificates this test makes: the real gRPC
servicer functions and gateway (on in-process random scorers, tests/_grpc_gateway.py) behind a grpc.aio
server with TLS, as a TLS-terminating ingress in front of Ray Serve's plaintext gRPC proxy would present it."""

from __future__ import annotations

import grpc
import pytest
import torch
from _certs import make_pki
from _grpc_gateway import grpc_gateway

from cxrl import imaging
from cxrl.client import TLS, RewardClient, RewardServiceError, parse_target
from cxrl.rewards.backend import InProcessRewards
from cxrl.rewards.factory import random_scorers

TOKEN = "tls-test-token"
REPORTS = ["No acute process.", "Cardiomegaly."]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    return make_pki(root / "ours"), make_pki(root / "impostor", "impostor CA")


@pytest.fixture(scope="module")
def tls_server(pki):
    ours, _ = pki
    creds = grpc.ssl_server_credentials(
        [(ours["server_key"].read_bytes(), ours["server"].read_bytes())],
        root_certificates=ours["ca"].read_bytes(),
        require_client_auth=True,  # mutual TLS: only clients with a certificate from our CA
    )
    with grpc_gateway(0, token=TOKEN, credentials=creds) as url:
        yield url.removeprefix("grpcs://")  # host:port, the target RewardClient takes with tls=


def _images():
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    return imaging.from_uint8(imaging.to_uint8(x))


def test_scores_over_mutual_tls_match_in_process(tls_server, pki):
    ours, _ = pki
    tls = TLS(str(ours["ca"]), str(ours["client"]), str(ours["client_key"]))
    with RewardClient(tls_server, token=TOKEN, tls=tls, retries=0) as client:
        got = client.score(_images(), REPORTS)
    want = InProcessRewards(*random_scorers(0), rlcf=False).score(_images(), REPORTS)
    torch.testing.assert_close(got.total, want.total, atol=1e-5, rtol=0)


def test_grpcs_url_reads_tls_from_the_environment(tls_server, pki, monkeypatch):
    ours, _ = pki
    monkeypatch.setenv("CXRL_TLS_CA", str(ours["ca"]))
    monkeypatch.setenv("CXRL_TLS_CERT", str(ours["client"]))
    monkeypatch.setenv("CXRL_TLS_KEY", str(ours["client_key"]))
    assert parse_target(f"grpcs://{tls_server}") == tls_server
    with RewardClient.from_url(f"grpcs://{tls_server}", token=TOKEN, retries=0) as client:
        assert len(client.info()) == 3


@pytest.mark.parametrize(
    "who",
    [
        "plaintext client",
        "server cert from another CA",
        "no client certificate",
        "client cert from another CA",
    ],
)
def test_connections_without_the_right_certificates_are_refused(tls_server, pki, who):
    ours, impostor = pki
    tls = {
        "plaintext client": None,
        "server cert from another CA": TLS(str(impostor["ca"]), str(ours["client"]), str(ours["client_key"])),
        "no client certificate": TLS(str(ours["ca"])),
        "client cert from another CA": TLS(
            str(ours["ca"]), str(impostor["client"]), str(impostor["client_key"])
        ),
    }[who]
    with RewardClient(tls_server, token=TOKEN, tls=tls, retries=0, timeout_s=10) as client:
        with pytest.raises(RewardServiceError) as err:
            client.score(_images(), REPORTS)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE, (who, err.value)


def test_half_a_client_key_pair_is_a_clear_error(pki):
    ours, _ = pki
    with pytest.raises(ValueError, match="both client_cert and client_key"):
        RewardClient("127.0.0.1:1", tls=TLS(str(ours["ca"]), client_cert=str(ours["client"])))
