"""kxform.predictor.grpc: a target with a resolver scheme spreads calls over every predictor address."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import (
    GRPCInferenceServiceServicer,
    add_GRPCInferenceServiceServicer_to_server,
)

from kxform.predictor.base import PredictorSettings
from kxform.predictor.grpc import GrpcPredictor, channel_options


class CountingTriton(GRPCInferenceServiceServicer):  # type: ignore[misc]  # kserve's generated base is untyped
    """A stand-in Triton pod that answers ServerReady and counts the calls it got."""

    def __init__(self) -> None:
        self.calls = 0

    async def ServerReady(self, request: pb.ServerReadyRequest, context: object) -> pb.ServerReadyResponse:  # noqa: N802
        self.calls += 1
        return pb.ServerReadyResponse(ready=True)


@pytest.fixture
async def two_pods() -> AsyncIterator[list[tuple[int, CountingTriton]]]:
    pods: list[tuple[int, CountingTriton]] = []
    servers = []
    for _ in range(2):
        servicer = CountingTriton()
        server = grpc.aio.server()
        add_GRPCInferenceServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        pods.append((port, servicer))
    yield pods
    for server in servers:
        await server.stop(None)


async def _ready_calls(target: str, calls: int) -> None:
    predictor = GrpcPredictor(PredictorSettings(target, protocol="grpc-v2", timeout=5))
    try:
        for _ in range(calls):
            assert await predictor.server_ready()
    finally:
        await predictor.close()


async def test_grpc_target_with_scheme_round_robins_over_pods(two_pods: list[tuple[int, CountingTriton]]) -> None:
    # What a headless Service's DNS name gives the channel: several pod addresses for one name.
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port, _ in two_pods)
    await _ready_calls(target, 20)
    counts = [servicer.calls for _, servicer in two_pods]
    assert sum(counts) == 20
    assert min(counts) >= 5, counts  # round-robin: about half each; pick_first would give [20, 0]


async def test_grpc_bare_host_port_sticks_to_one_address(two_pods: list[tuple[int, CountingTriton]]) -> None:
    (port, first), (_, second) = two_pods
    await _ready_calls(f"127.0.0.1:{port}", 5)
    assert (first.calls, second.calls) == (5, 0)


@pytest.mark.parametrize(
    ("target", "balanced"),
    [
        pytest.param("dns:///kxform-scale-predictor-grpc.kxform.svc.cluster.local:9000", True, id="dns-headless"),
        pytest.param("ipv4:10.0.0.1:9000,10.0.0.2:9000", True, id="ipv4-list"),
        pytest.param("kxform-grpc-predictor.kxform.svc.cluster.local:80", False, id="cluster-ip"),
        pytest.param("localhost:9000", False, id="collocated"),
    ],
)
def test_grpc_channel_balances_only_targets_with_a_scheme(target: str, balanced: bool) -> None:
    options = dict(channel_options(target))
    assert (options.get("grpc.lb_policy_name") == "round_robin") is balanced
    assert options["grpc.max_receive_message_length"] == 256 * 1024 * 1024
