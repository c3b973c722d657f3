"""The functions the local runner learns from knative/base, and the env each gets (pure logic)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from localknative.launch import check_wiring, function_bindings
from localknative.topology import TopologyError, load_topology
from localknative.workloads import (
    AUDIT,
    CLASSIFIER,
    LOCAL_ENV_ANNOTATION,
    UNSUBSCRIBED,
    VERDICT,
    LocalRun,
    audit_subscriptions,
    function_roles,
    load_functions,
    namespace_of,
    parse_functions,
    render_env,
    secret_examples,
    service_ports,
)

BASE = Path(__file__).resolve().parents[2] / "knative" / "base"
GRPC, REST, S3 = "127.0.0.1:1001", "http://127.0.0.1:1002", "http://127.0.0.1:1003"
S3_ENV = {
    "AWS_ENDPOINT_URL": S3,
    "AWS_ENDPOINT_URL_S3": S3,
    "AWS_ACCESS_KEY_ID": "local-access",
    "AWS_SECRET_ACCESS_KEY": "local-secret",
    "AWS_REGION": "default",
    "AWS_DEFAULT_REGION": "default",
}


def local_run(**services: str) -> LocalRun:
    secrets = {
        **secret_examples(BASE),
        ("s3-credentials", "AWS_ACCESS_KEY_ID"): "local-access",
        ("s3-credentials", "AWS_SECRET_ACCESS_KEY"): "local-secret",
        ("vision-api-key", "GOOGLE_VISION_API_KEY"): "run-key",
    }
    return LocalRun(
        secrets=secrets,
        services={
            ("modelserver", 8500): GRPC,
            ("modelserver", 8501): REST.removeprefix("http://"),
            **{(name, 80): url for name, url in services.items()},
        },
        s3_env=S3_ENV,
        endpoints={"modelserver-grpc": GRPC, "modelserver-rest": REST, "s3-endpoint": S3},
        namespace="rgw-inference",
    )


def function(
    name: str, image: str | None = None, local_env: str | None = None, **container: object
) -> dict[str, object]:
    annotations = {} if local_env is None else {LOCAL_ENV_ANNOTATION: local_env}
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Configuration",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "template": {
                "spec": {"containers": [{"image": image or f"rgw-inference/{name}", **container}]}
            }
        },
    }


def test_the_base_declares_the_three_functions_with_their_roles() -> None:
    functions = load_functions(BASE)
    assert [(f.name, f.module, str(f.ref)) for f in functions if f.name != "evaluation"] == [
        ("compliance", "functions.compliance", "Service/compliance"),
        ("receiver", "functions.receiver", "Service/receiver"),
        ("resnet", "functions.resnet", "Configuration/resnet"),
        ("vision", "functions.vision", "Configuration/vision"),
    ]
    topology = load_topology(BASE)
    roles = function_roles(topology, functions)
    assert {name: roles[name] for name in ("compliance", "receiver", "resnet", "vision")} == {
        "compliance": VERDICT,  # every object, beside the classifiers; its replies are verdicts
        "receiver": AUDIT,
        "resnet": CLASSIFIER,
        "vision": CLASSIFIER,
    }
    # The deliveries the demo notes, not where an object was routed to be classified.
    assert audit_subscriptions(topology) == {"receiver", "compliance"}
    assert namespace_of(BASE) == "rgw-inference"
    assert service_ports(BASE, "modelserver") == {"grpc": 8500, "http": 8501}


def test_todays_functions_get_todays_env() -> None:
    env = {spec.name: render_env(spec, local_run()) for spec in load_functions(BASE)}
    for name in ("receiver", "resnet", "vision"):
        assert {k: env[name][k] for k in S3_ENV} == S3_ENV, name
        # The ConfigMap's values are the code's defaults: they change nothing locally.
        assert env[name]["TAG_OBJECTS"] == "false" and env[name]["REPLY_EVENTS"] == "true"
    assert env["resnet"]["RESNET_SERVING_ENDPOINT"] == GRPC  # the cluster address, rewritten
    assert env["resnet"]["MODEL_NAME"] == "mobilenet_v2"  # the local-only override
    assert env["vision"]["VISION_ENDPOINT"] == REST  # {modelserver-rest}
    assert env["vision"]["GOOGLE_VISION_API_KEY"] == "run-key"
    assert env["vision"]["VISION_MAX_RESULTS"] == "5"
    assert "GOOGLE_VISION_API_KEY" not in env["resnet"]


def test_a_scaffolded_function_is_found_without_any_other_edit(tmp_path: Path) -> None:
    """Folder + manifest: here the package check stands in for the folder."""
    base = tmp_path / "base"
    shutil.copytree(BASE, base)
    manifest = function(
        "sepia",
        "rgw-inference/sepia:0.1.0",
        local_env='{"TARGET": "{modelserver-grpc}"}',
        envFrom=[{"configMapRef": {"name": "rgw-inference-settings"}}],
        env=[{"name": "DEAD", "value": "http://dead-letters.rgw-inference.svc.cluster.local"}],
    )
    (base / "sepia.yaml").write_text(yaml.safe_dump(manifest))
    functions = load_functions(base, has_package=lambda module: True)
    [sepia] = [f for f in functions if f.name == "sepia"]
    assert sepia.module == "functions.sepia"
    env = render_env(sepia, local_run(**{"dead-letters": "127.0.0.1:2002"}))
    assert env["TARGET"] == GRPC and env["DEAD"] == "http://127.0.0.1:2002"
    assert env["LOG_LEVEL"] == "INFO"
    topology = load_topology(base)
    assert function_roles(topology, functions)["sepia"] == UNSUBSCRIBED
    urls = {f.name: f"http://127.0.0.1:{n}" for n, f in enumerate(functions, 3000)}
    binds = function_bindings(functions, urls)
    assert binds["Configuration/sepia"] == binds["Service/sepia"] == urls["sepia"]


def test_only_project_images_under_their_own_name_with_a_package_are_functions() -> None:
    documents = [
        ("a", function("receiver")),
        # The dead-letter sink runs the receiver's image: a collector plays it, not a function.
        ("b", function("dead-letters", "rgw-inference/receiver")),
        ("c", function("results", "gcr.io/knative-releases/event_display")),
        ("d", function("ghost")),  # no package functions.ghost
        ("f", function("thumb-maker")),  # a Kubernetes name; its package is functions.thumb_maker
        ("e", {**function("resnet"), "apiVersion": "apps/v1", "kind": "Deployment"}),
    ]
    found = parse_functions(
        documents,
        has_package=lambda module: module in ("functions.receiver", "functions.thumb_maker"),
    )
    assert [(f.name, f.module) for f in found] == [
        ("receiver", "functions.receiver"),
        ("thumb-maker", "functions.thumb_maker"),
    ]


def test_the_channel_must_name_only_objects_the_run_plays(tmp_path: Path) -> None:
    base = tmp_path / "base"
    shutil.copytree(BASE, base)
    functions = [f for f in load_functions(base) if f.name != "vision"]
    with pytest.raises(TopologyError, match="Configuration/vision"):
        check_wiring(load_topology(base), functions)
    check_wiring(load_topology(base), load_functions(base))


@pytest.mark.parametrize(
    ("container", "error"),
    [
        ({"local_env": '{"X": "{nowhere}"}'}, "unknown placeholder"),
        ({"local_env": "[1]"}, "JSON object"),
        ({"envFrom": [{"configMapRef": {"name": "missing"}}]}, "not found"),
    ],
)
def test_manifest_errors_say_where(container: dict[str, object], error: str) -> None:
    with pytest.raises(TopologyError, match=error):
        parse_functions([("f.yaml#0", function("x", **container))], lambda module: True)  # type: ignore[arg-type]


def test_an_address_or_secret_the_run_cannot_give_is_refused() -> None:
    unreachable = function(
        "x", env=[{"name": "DB", "value": "postgres.rgw-inference.svc.cluster.local:5432"}]
    )
    [spec] = parse_functions([("f", unreachable)], lambda module: True)
    with pytest.raises(TopologyError, match=r"DB=.*does not play"):
        render_env(spec, local_run())
    secret = function(
        "x",
        env=[{"name": "T", "valueFrom": {"secretKeyRef": {"name": "other", "key": "TOKEN"}}}],
    )
    [spec] = parse_functions([("f", secret)], lambda module: True)
    with pytest.raises(TopologyError, match="Secret 'other' key 'TOKEN'"):
        render_env(spec, local_run())
