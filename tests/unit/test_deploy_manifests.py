"""The deployment files: the kustomize overlays render, every object is valid for a pinned
Kubernetes version (KEDA's objects for a pinned KEDA version), docker-compose.yml follows the
Compose specification, and what they run, expose and set exists in this repository.

The overlays are rendered by a small kustomize subset below (resources, strategic-merge patches,
images, namespace); where `kubectl` or `kustomize` is installed, its output must be the same.
"""

from __future__ import annotations

import ast
import copy
import json
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic_settings import BaseSettings

from shared.config import CommonSettings, GatewaySettings, RecommenderSettings, WorkerSettings
from shared.settings_doc import _env_names as settings_env
from shared.settings_doc import settings_classes
from shared.tasks import QUEUES

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "docker-compose.yml"
DOCS = ROOT / "docs" / "deployment.md"
OVERLAYS = ("dev", "production")
# The oldest Kubernetes release KEDA 2.16 supports; kubernetes-validate ships its schemas.
K8S_VERSION = "1.31.0"
KEDA_SCHEMAS = ROOT / "tests" / "data" / "keda-v2.16-schemas.json"
# Images built elsewhere, by repository: the dev overlay's and compose's backing services.
THIRD_PARTY_IMAGES = ("postgres", "redis", "mher/flower")
# Not settings: KEDA's redis scaler reads these from the worker pods' environment (and Secret).
KEDA_ENV = {"REDIS_ADDRESS", "REDIS_PASSWORD"}
THIRD_PARTY_ENV = {
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "CELERY_BROKER_URL",
    "FLOWER_PORT",
}
SECRET = "atelier-secrets"
HTTP_ROLES = {"gateway": GatewaySettings, "recommender": RecommenderSettings}
ROLE_SETTINGS: dict[str, type[CommonSettings]] = {
    **HTTP_ROLES,
    **{f"worker-{q}": WorkerSettings for q in QUEUES},
    "beat": WorkerSettings,
    "migrate": CommonSettings,
    "models": CommonSettings,
}
PG_CLIENTS = {"gateway", "recommender", "migrate", *(f"worker-{q}" for q in QUEUES)}
REDIS_CLIENTS = {"gateway", "beat", *(f"worker-{q}" for q in QUEUES)}

Obj = dict[str, Any]


# ---- a kustomize subset --------------------------------------------------------------------

# Strategic merge keys of the built-in list fields our patches touch; other lists are replaced,
# and custom resources (KEDA) get a JSON merge patch, as kustomize does.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "ports": "containerPort"}  # fmt: skip


def _load_all(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _merge(base: Any, patch: Any, *, strategic: bool, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _merge(base[k], v, strategic=strategic, key=k) if k in base else v
        return out
    merge_key = MERGE_KEYS.get(key) if strategic else None
    if merge_key and isinstance(base, list) and isinstance(patch, list):
        merged, added = list(base), []
        for item in patch:
            at = [i for i, b in enumerate(merged) if b.get(merge_key) == item[merge_key]]
            if at:
                merged[at[0]] = _merge(merged[at[0]], item, strategic=True)
            else:
                added.append(copy.deepcopy(item))
        return added + merged  # kustomize puts the patch's new items first
    return copy.deepcopy(patch)


def _split_image(ref: str) -> tuple[str, str]:
    name, sep, tag = ref.rpartition(":")
    return (name, tag) if sep and "/" not in tag else (ref, "")


def _set_images(node: Any, images: list[dict[str, str]]) -> None:
    if isinstance(node, list):
        for item in node:
            _set_images(item, images)
    elif isinstance(node, dict):
        for k, v in node.items():
            if k in ("containers", "initContainers"):
                for c in v:
                    name = _split_image(c["image"])[0]
                    for rule in images:
                        if rule["name"] == name:
                            new = rule.get("newName", name)
                            c["image"] = f"{new}:{rule['newTag']}" if "newTag" in rule else new
            else:
                _set_images(v, images)


def render(directory: Path) -> list[Obj]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    known = {"apiVersion", "kind", "resources", "patches", "images", "namespace"}
    assert set(spec) <= known, f"{directory}: the test renderer lacks {set(spec) - known}"
    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        objects += render(path) if path.is_dir() else _load_all(path)
    for entry in spec.get("patches", []):
        assert set(entry) == {"path"}, f"{directory}: only patch files are rendered here"
        for patch in _load_all(directory / entry["path"]):
            ident = (patch["apiVersion"], patch["kind"], patch["metadata"]["name"])
            at = [i for i, o in enumerate(objects) if _ident(o) == ident]
            assert len(at) == 1, f"{directory / entry['path']}: {ident} matches {len(at)} objects"
            strategic = "." not in patch["apiVersion"].split("/")[0] or "k8s.io" in ident[0]
            objects[at[0]] = _merge(objects[at[0]], patch, strategic=strategic)
    _set_images(objects, spec.get("images", []))
    if "namespace" in spec:
        for obj in objects:
            obj["metadata"]["namespace"] = spec["namespace"]
    return objects


def _ident(obj: Obj) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


@cache
def rendered(overlay: str) -> tuple[Obj, ...]:
    objects = render(K8S / "overlays" / overlay)
    idents = [_ident(o) for o in objects]
    assert len(idents) == len(set(idents)), f"{overlay}: duplicate objects"
    return tuple(objects)


def _all_objects() -> Iterator[tuple[str, Obj]]:
    for overlay in OVERLAYS:
        for obj in rendered(overlay):
            yield overlay, obj


def _of_kind(overlay: str, kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in rendered(overlay) if o["kind"] == kind}


def _pod_spec(obj: Obj) -> Obj | None:
    return obj["spec"]["template"]["spec"] if obj["kind"] in ("Deployment", "Job") else None


def _role(obj: Obj) -> str:
    return str(obj["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component"))


def _ours(image: str) -> bool:
    return not _split_image(image)[0].startswith(THIRD_PARTY_IMAGES)


def _containers() -> Iterator[tuple[str, Obj, Obj]]:
    for overlay, obj in _all_objects():
        pod = _pod_spec(obj)
        for c in pod["containers"] if pod else []:
            yield overlay, obj, c


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_renderer_agrees_with_kustomize(overlay: str) -> None:
    if kubectl := shutil.which("kubectl"):
        cmd = [kubectl, "kustomize"]
    elif kustomize := shutil.which("kustomize"):
        cmd = [kustomize, "build"]
    else:
        pytest.skip("neither kubectl nor kustomize is installed")
    out = subprocess.run([*cmd, str(K8S / "overlays" / overlay)], capture_output=True,
                         text=True, timeout=120, check=True).stdout  # fmt: skip
    theirs = {_ident(o): o for o in yaml.safe_load_all(out) if o}
    assert theirs == {_ident(o): o for o in rendered(overlay)}


# ---- schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_are_valid_for_the_pinned_kubernetes(overlay: str) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    for obj in rendered(overlay):
        if obj["apiVersion"].startswith("keda.sh/"):
            continue
        try:
            kv.validate(obj, K8S_VERSION, strict=True)
        except (kv.ValidationError, kv.SchemaNotFoundError) as exc:
            pytest.fail(f"{overlay} {_ident(obj)}: {exc}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_objects_match_the_crd_schemas(overlay: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schemas = json.loads(KEDA_SCHEMAS.read_text(encoding="utf-8"))["schemas"]
    keda = [o for o in rendered(overlay) if o["apiVersion"].startswith("keda.sh/")]
    assert {o["kind"] for o in keda} == set(schemas)
    for obj in keda:
        errors = list(jsonschema.Draft202012Validator(schemas[obj["kind"]]).iter_errors(obj))
        assert not errors, f"{overlay} {_ident(obj)}: {[e.message for e in errors]}"


def test_compose_file_follows_the_compose_specification() -> None:
    pytest.importorskip("check_jsonschema")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


# ---- roles, probes, autoscaling ----------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_role_has_a_deployment_with_resources_and_a_budget(overlay: str) -> None:
    deployments = {_role(d): d for d in _of_kind(overlay, "Deployment").values()}
    roles = {*HTTP_ROLES, "beat", *(f"worker-{q}" for q in QUEUES)}
    assert roles <= set(deployments)
    budgets = _of_kind(overlay, "PodDisruptionBudget").values()
    for role in roles:
        dep = deployments[role]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert any(
            b["spec"]["selector"]["matchLabels"].items() <= labels.items() for b in budgets
        ), f"{role}: no PodDisruptionBudget"
    for _, obj, c in _containers():
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c.get("resources", {}).get(part, {})), (
                _ident(obj),
                part,
            )


def _port_number(container: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes(overlay: str) -> None:
    for dep in _of_kind(overlay, "Deployment").values():
        role, (c,) = _role(dep), dep["spec"]["template"]["spec"]["containers"]
        if role in HTTP_ROLES:
            port = HTTP_ROLES[role].model_fields["port"].default
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                assert c[probe]["httpGet"]["path"] == path, (role, probe)
                assert _port_number(c, c[probe]["httpGet"]["port"]) == port, (role, probe)
        elif role.startswith("worker-"):
            probe = shlex.join(c["livenessProbe"]["exec"]["command"])
            assert f"inspect ping -d {role.removeprefix('worker-')}@$HOSTNAME" in probe, role


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_http_roles_scale_on_cpu_and_each_queue_on_its_length(overlay: str) -> None:
    deployments = _of_kind(overlay, "Deployment")
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h
        for h in _of_kind(overlay, "HorizontalPodAutoscaler").values()
    }
    scaled = {
        s["spec"]["scaleTargetRef"]["name"]: s for s in _of_kind(overlay, "ScaledObject").values()
    }
    assert not set(hpas) & set(scaled), "a Deployment with both an HPA and a ScaledObject"
    for role in HTTP_ROLES:
        (metric,) = hpas[f"atelier-{role}"]["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
    for queue in QUEUES:
        name = f"atelier-worker-{queue}"
        command = deployments[name]["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[command.index("-Q") + 1] == queue
        (trigger,) = scaled[name]["spec"]["triggers"]
        assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == queue
    for name in {*hpas, *scaled}:
        # A replica count in the manifest would undo the autoscaler on every apply.
        assert "replicas" not in deployments[name]["spec"], name
    beat = next(d for d in deployments.values() if _role(d) == "beat")
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"


def test_keda_reads_the_redis_the_suite_uses() -> None:
    secret = _of_kind("dev", "Secret")[SECRET]["stringData"]
    url = urlsplit(secret["ATELIER_REDIS_URL"])
    assert secret["REDIS_ADDRESS"] == f"{url.hostname}:{url.port or 6379}"
    assert secret["REDIS_PASSWORD"] == (url.password or "")
    for overlay in OVERLAYS:
        for so in _of_kind(overlay, "ScaledObject").values():
            meta = so["spec"]["triggers"][0]["metadata"]
            assert meta["databaseIndex"] == (url.path.strip("/") or "0")
            assert meta["addressFromEnv"] in KEDA_ENV


# ---- network policies --------------------------------------------------------------------------


def _selects(selector: Obj, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "the test understands matchLabels only"
    return selector.get("matchLabels", {}).items() <= labels.items()


def _reaches(policies: list[Obj], source: dict[str, str], target: dict[str, str]) -> bool:
    selecting = [p for p in policies if _selects(p["spec"]["podSelector"], target)]
    assert selecting, f"no policy selects {target}"
    # A peer with only a namespaceSelector admits pods of other namespaces, never ours.
    return any(
        "from" not in rule
        or any(
            "podSelector" in peer and _selects(peer["podSelector"], source) for peer in rule["from"]
        )
        for policy in selecting
        for rule in policy["spec"].get("ingress", [])
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies(overlay: str) -> None:
    policies = list(_of_kind(overlay, "NetworkPolicy").values())
    assert any(p["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]} for p in policies)
    pods = {
        _role(o): o["spec"]["template"]["metadata"]["labels"]
        for o in rendered(overlay)
        if (pod := _pod_spec(o)) and _ours(pod["containers"][0]["image"])
    }
    targets = {
        "recommender": (pods["recommender"], {"gateway"}),
        "postgres": ({"app.kubernetes.io/name": "postgresql"}, PG_CLIENTS),
        "redis": ({"app.kubernetes.io/name": "redis"}, REDIS_CLIENTS),
    }
    for target, (labels, expected) in targets.items():
        clients = {role for role, source in pods.items() if _reaches(policies, source, labels)}
        assert clients == expected, target


# ---- images, commands, settings, ports ---------------------------------------------------------


def _dockerfile_cmd(dockerfile: Path) -> list[str]:
    line = next(
        x for x in dockerfile.read_text(encoding="utf-8").splitlines() if x.startswith("CMD")
    )
    return list(json.loads(line.removeprefix("CMD")))


def _dockerfile_for(image: str) -> Path:
    name = _split_image(image)[0]
    path = ROOT / "deploy" / f"Dockerfile.{name.rsplit('/', 1)[-1]}"
    assert name.startswith("atelier/") and path.is_file(), f"{image}: no Dockerfile in deploy/"
    return path


def _compose() -> Obj:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _commands() -> Iterator[tuple[str, list[str]]]:
    """Every command line our images run: k8s containers and exec probes, compose services."""
    for overlay, obj, c in _containers():
        if _ours(c["image"]):
            where = f"{overlay} {obj['metadata']['name']}"
            yield where, c.get("command") or _dockerfile_cmd(_dockerfile_for(c["image"]))
            if "exec" in c.get("livenessProbe", {}):
                yield where, c["livenessProbe"]["exec"]["command"]
    for name, svc in _compose()["services"].items():
        if "build" in svc:
            yield name, svc.get("command") or _dockerfile_cmd(ROOT / svc["build"]["dockerfile"])


def _module_file(module: str, *, main: bool = False) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for path in (base / "__main__.py" if main else None, base.with_suffix(".py")):
        if path is not None and path.is_file():
            return path
    return None


def _pyproject() -> Obj:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _atelier_command_exists(words: list[str]) -> bool:
    import typer

    from suite.cli import app

    command = typer.main.get_command(app)
    for word in words:
        subcommands = getattr(command, "commands", {})
        if word not in subcommands:
            return word.startswith("-") and not subcommands
        command = subcommands[word]
    return not getattr(command, "commands", {})


def _check_command(where: str, argv: list[str]) -> None:
    prog, *rest = argv
    if prog == "sh" and rest[0] == "-c":
        _check_command(where, shlex.split(rest[1]))
    elif prog == "atelier":
        scripts = _pyproject()["project"]["scripts"]
        assert "atelier" in scripts and _atelier_command_exists(rest), (where, argv)
    elif prog == "python":
        assert rest[0] == "-m" and _module_file(rest[1], main=True), (where, argv)
    elif prog == "celery":
        assert _module_file(rest[rest.index("-A") + 1]), (where, argv)
        assert {"worker", "beat", "inspect"} & set(rest), (where, argv)
        if "-Q" in rest:
            assert rest[rest.index("-Q") + 1] in QUEUES, (where, argv)
    elif prog == "uvicorn":
        module, attr = rest[rest.index("--factory") + 1].split(":")
        path = _module_file(module)
        assert path, (where, argv)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert any(getattr(n, "name", None) == attr for n in tree.body), (where, argv)
    else:
        pytest.fail(f"{where}: unknown program {prog}")


def test_images_are_built_here_or_pinned_third_party() -> None:
    for _, _, c in _containers():
        if _ours(c["image"]):
            _dockerfile_for(c["image"])
        else:
            assert _split_image(c["image"])[1] not in ("", "latest"), c["image"]
    for name, svc in _compose()["services"].items():
        if "build" in svc:
            assert (ROOT / svc["build"]["dockerfile"]).parent == ROOT / "deploy", name
        else:
            assert not _ours(svc["image"]) and _split_image(svc["image"])[1], name


def test_every_command_exists() -> None:
    commands = list(_commands())
    assert commands
    for where, argv in commands:
        _check_command(where, argv)


def _env_names(cls: type[BaseSettings]) -> set[str]:
    fields = cls.model_fields.items()
    return {env for name, field in fields for env in settings_env(cls, name, field)}


def _check_env(where: str, names: set[str], allowed: set[str], extra: set[str]) -> None:
    ours = {n for n in names if n.startswith("ATELIER_")}
    assert ours <= allowed, f"{where}: not settings fields: {sorted(ours - allowed)}"
    assert names - ours <= extra, f"{where}: unexpected variables {sorted(names - ours - extra)}"


def test_every_variable_set_is_a_setting() -> None:
    every = set().union(*(_env_names(cls) for cls in settings_classes()))
    for overlay, obj in _all_objects():
        data = obj.get("data", obj.get("stringData", {}))
        if obj["kind"] in ("ConfigMap", "Secret"):
            _check_env(f"{overlay} {obj['metadata']['name']}", set(data), every, KEDA_ENV)
    for overlay, obj, c in _containers():
        names = {e["name"] for e in c.get("env", [])}
        if _ours(c["image"]):
            _check_env(
                f"{overlay} {_role(obj)}", names, _env_names(ROLE_SETTINGS[_role(obj)]), set()
            )
    compose = _compose()
    for name, svc in compose["services"].items():
        allowed = every if "build" in svc else set()
        _check_env(name, set(svc.get("environment", {})), allowed, THIRD_PARTY_ENV)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_references_resolve(overlay: str) -> None:
    names = {(o["kind"], o["metadata"]["name"]) for o in rendered(overlay)}
    for _, _, c in ((o, ob, c) for o, ob, c in _containers() if o == overlay):
        for ref in c.get("envFrom", []):
            for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if field in ref and (kind, ref[field]["name"]) not in names:
                    # Production's Secret is created out of band, as docs/deployment.md says.
                    assert (overlay, kind, ref[field]["name"]) == ("production", "Secret", SECRET)
    doc = DOCS.read_text(encoding="utf-8")
    for key in _of_kind("dev", "Secret")[SECRET]["stringData"]:
        assert key in doc, f"docs/deployment.md does not say how to set {key}"


def _uvicorn_port(argv: list[str]) -> int:
    assert argv[argv.index("--host") + 1] == "0.0.0.0", argv
    return int(argv[argv.index("--port") + 1])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_match_the_settings_and_the_images(overlay: str) -> None:
    services = _of_kind(overlay, "Service")
    policies = _of_kind(overlay, "NetworkPolicy")
    for role, cls in HTTP_ROLES.items():
        port = cls.model_fields["port"].default
        assert _uvicorn_port(_dockerfile_cmd(ROOT / "deploy" / f"Dockerfile.{role}")) == port
        dep = _of_kind(overlay, "Deployment")[f"atelier-{role}"]
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert not c.get("command") and [p["containerPort"] for p in c["ports"]] == [port]
        (svc_port,) = services[f"atelier-{role}"]["spec"]["ports"]
        assert svc_port["port"] == port and _port_number(c, svc_port["targetPort"]) == port
        (rule,) = policies[f"atelier-{role}-ingress"]["spec"]["ingress"]
        assert [p["port"] for p in rule["ports"]] == [port]
    url = urlsplit(
        _of_kind(overlay, "ConfigMap")["atelier-config"]["data"]["ATELIER_RECOMMENDER_URL"]
    )
    assert (url.hostname, url.port) == ("atelier-recommender", RecommenderSettings().port)


def test_compose_services() -> None:
    compose = _compose()
    services, env = compose["services"], compose["x-env"]
    gateway_port = GatewaySettings.model_fields["port"].default
    assert services["gateway"]["ports"] == [f"{gateway_port}:{gateway_port}"]
    url = urlsplit(env["ATELIER_RECOMMENDER_URL"])
    assert url.hostname in services and url.port == RecommenderSettings().port
    assert services["flower"]["image"].startswith("mher/flower:")
    assert services["flower"]["environment"]["CELERY_BROKER_URL"] == env["ATELIER_REDIS_URL"]
    commands = {n: s.get("command") or _dockerfile_cmd(ROOT / s["build"]["dockerfile"])
                for n, s in services.items() if "build" in s}  # fmt: skip
    for queue in QUEUES:
        worker = services[f"worker-{queue}"]
        # `docker compose up --scale worker-QUEUE=N` needs neither a fixed name nor a host port.
        assert "container_name" not in worker and "ports" not in worker
        cmd = commands[f"worker-{queue}"]
        assert cmd[cmd.index("-Q") + 1] == queue
    doc = DOCS.read_text(encoding="utf-8")
    assert "--scale worker-tagging=" in doc
    assert "kubectl apply -k deploy/k8s/overlays/production" in doc
