"""The evaluation overlay as the local runner plays it: `localknative.overlay` must build what
`kubectl kustomize` builds, and the runner's wiring from it must send every object to both
classifiers, with their results delivered to the evaluation function by its Trigger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from localknative.compare import OVERLAY
from localknative.launch import BROKER, CHANNEL, DEAD_LETTERS, function_bindings
from localknative.overlay import materialize, merge_patch, read_overlay
from localknative.routing import Bindings, plan_channel
from localknative.topology import Ref, TopologyError, load_topology, triggers_to
from localknative.workloads import CLASSIFIER, function_roles, load_functions, namespace_of
from tests.unit.test_knative_manifests import KNATIVE, build, index


def without_namespace(doc: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in doc["metadata"].items() if k != "namespace"}
    return {**doc, "metadata": meta}


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return materialize(OVERLAY, tmp_path_factory.mktemp("evaluation"))


def test_the_local_build_is_kubectls_but_for_the_generated_secrets(played: Path) -> None:
    kubectl = {key: doc for key, doc in index(build(OVERLAY)).items() if key[0] != "Secret"}
    local = index(tuple(doc for doc in yaml.safe_load_all((played / "objects.yaml").read_text())))
    assert set(local) == set(kubectl)
    for key, doc in kubectl.items():
        if key[0] in {"Route", "Subscription", "Trigger", "Service", "Configuration"}:
            # Only the image tags differ: the runner skips the images component.
            assert without_namespace(doc)["spec"].keys() == local[key]["spec"].keys(), key
            if key[0] != "Service" and key[0] != "Configuration":
                assert without_namespace(doc)["spec"] == local[key]["spec"], key
    annotations = local[("Service", "evaluation")]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/min-scale"] == "1"
    assert annotations["autoscaling.knative.dev/max-scale"] == "1"
    assert namespace_of(played) == "rgw-inference"


def test_every_object_reaches_both_classifiers_and_their_replies_the_broker(played: Path) -> None:
    topology = load_topology(played)
    functions = load_functions(played)
    roles = function_roles(topology, functions)
    assert roles["resnet"] == roles["vision"] == CLASSIFIER
    urls = {spec.name: f"http://127.0.0.1/{spec.name}" for spec in functions}
    binds = {**function_bindings(functions, urls), DEAD_LETTERS: "http://dl", BROKER: "http://b"}
    plans = plan_channel(topology, CHANNEL, Bindings(binds))
    replying = {
        target.name: plan.reply_url for plan in plans if plan.reply_url for target in plan.targets
    }
    both = {"Configuration/resnet": "http://b", "Configuration/vision": "http://b"}
    assert both.items() <= replying.items()
    for plan in plans:
        assert sum(target.percent for target in plan.targets) == 100  # no split any more
    assert "classifiers" not in topology.routes


def test_the_evaluation_trigger_takes_the_classification_results(played: Path) -> None:
    (trigger,) = triggers_to(played, Ref("Service", "evaluation"))
    assert trigger.matches({"type": "dev.rgwinference.classification.result", "id": "1"})
    assert not trigger.matches({"type": "dev.rgwinference.compliance.verdict"})
    assert trigger.delivery.retry == 5 and trigger.delivery.backoff(0) == pytest.approx(0.2)
    assert triggers_to(KNATIVE / "base", Ref("Service", "evaluation")) == []


def test_what_the_local_reader_cannot_play_is_refused() -> None:
    with pytest.raises(TopologyError, match="target"):
        read_overlay(KNATIVE / "overlays" / "broker")  # deletes Subscriptions by a selector


def test_a_patch_naming_an_object_the_build_lacks_is_refused(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [str(OVERLAY)],
                "patches": [
                    {"patch": "$patch: delete\nkind: Route\nmetadata:\n  name: classifiers\n"}
                ],
            }
        )
    )
    with pytest.raises(TopologyError, match="not built"):
        read_overlay(tmp_path)


def test_merge_patch() -> None:
    target = {"a": {"b": 1, "c": 2}, "d": [1, 2]}
    assert merge_patch(target, {"a": {"b": 3, "c": None}, "d": [3]}) == {"a": {"b": 3}, "d": [3]}
