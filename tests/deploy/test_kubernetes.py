"""deploy/kubernetes/ validates against Kubernetes' own schemas (kubernetes-validate --strict, offline)
and keeps the invariants the service needs: probes, grace period, shared storage, affinity."""

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters.python.packages import PIP_TIMEOUT_S
from domain.model import WORKSPACE_ID
from entrypoints.settings import VARIABLES, load_settings
from tests.deploy.files import (
    CUSTOM_RESOURCES,
    KUBERNETES,
    NGINX,
    container,
    manifest_files,
    objects,
    settings_data,
)

# The oldest Kubernetes the manifests are checked against, and (None) the newest kubernetes-validate knows.
VERSIONS = ["1.30.0", None]
LABELS = {"app.kubernetes.io/name": "functions", "app.kubernetes.io/component": "server"}
MAP_START = r"map \$uri \$functions_workspace \{"
WORKSPACE_MAP = ['"~^/v2/functions/(?<ws>[^/]+)" $ws;', "default $uri;"]


def validate(files: list[Path], version: str | None) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
    args += ["-k", version] if version else []
    return subprocess.run([*args, *map(str, files)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_strictly(version: str | None) -> None:
    files = [f for f in manifest_files() if f.relative_to(KUBERNETES) not in CUSTOM_RESOURCES]
    assert len(files) >= 9
    done = validate(files, version)
    # --quiet prints nothing for a valid file; a kind without a schema is only a warning, so none may show.
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stdout
    kinds = {kind for kind, _ in objects()}
    assert {"Deployment", "Service", "PersistentVolumeClaim", "PodDisruptionBudget", "Ingress"} <= kinds


def test_strict_validation_catches_a_misspelled_field(tmp_path: Path) -> None:
    broken = tmp_path / "service.yaml"
    broken.write_text((KUBERNETES / "service.yaml").read_text().replace("targetPort:", "targetPrt:"))
    assert validate([broken], VERSIONS[0]).returncode != 0


def test_custom_resources_are_named_and_select_the_service() -> None:
    custom = {f.relative_to(KUBERNETES) for f in manifest_files() if "coreos.com" in f.read_text()}
    assert custom == CUSTOM_RESOURCES
    monitor = objects()[("ServiceMonitor", "functions")]["spec"]
    service = objects()[("Service", "functions")]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    ports = {port["name"] for port in service["spec"]["ports"]}
    assert [(e["port"], e["path"]) for e in monitor["endpoints"]] == [("http", "/metrics")]
    assert "http" in ports


def test_the_settings_are_known_and_valid() -> None:
    known = {name for names, _, _ in VARIABLES for name in names}
    assert set(settings_data()) <= known, set(settings_data()) - known
    settings = load_settings(settings_data(), tty=False)
    assert settings.host == "0.0.0.0" and settings.walls == "strict"


def test_the_pods_stop_within_their_grace_period() -> None:
    pod = objects()[("Deployment", "functions")]["spec"]["template"]["spec"]
    pre_stop = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = load_settings(settings_data(), tty=False).shutdown_grace_s
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + grace + 5


def probe(name: str) -> dict[str, Any]:
    value: dict[str, Any] = container()[name]["httpGet"]
    assert value["port"] == "http"
    return value


def test_the_probes_ask_the_healthcheck() -> None:
    assert probe("readinessProbe")["path"] == "/sys/healthcheck?ready"  # 503 while starting or stopping
    assert probe("livenessProbe")["path"] == "/sys/healthcheck"
    assert probe("startupProbe")["path"] == "/sys/healthcheck"
    startup = container()["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] > PIP_TIMEOUT_S  # the start-up install
    assert [p["name"] for p in container()["ports"]] == ["http"]


def test_the_storage_is_one_shared_volume() -> None:
    claim = objects()[("PersistentVolumeClaim", "functions-storage")]["spec"]
    assert claim["accessModes"] == ["ReadWriteMany"]
    pod = objects()[("Deployment", "functions")]["spec"]["template"]["spec"]
    volume = next(v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim"))
    mount = next(m["mountPath"] for m in container()["volumeMounts"] if m["name"] == volume)
    storage = Path(load_settings(settings_data(), tty=False).storage_dir)
    assert storage.is_relative_to(mount)
    packages = Path(load_settings(settings_data(), tty=False).python_packages_dir)
    assert not packages.is_relative_to(mount), "each replica would pip install into the shared folder"


def test_replicas_and_every_selector_agree() -> None:
    deployment = objects()[("Deployment", "functions")]["spec"]
    assert deployment["replicas"] > 1
    assert deployment["template"]["metadata"]["labels"] == LABELS
    assert deployment["selector"]["matchLabels"] == LABELS
    assert objects()[("PodDisruptionBudget", "functions")]["spec"]["selector"]["matchLabels"] == LABELS
    assert objects()[("Service", "functions")]["spec"]["selector"] == LABELS
    assert objects()[("NetworkPolicy", "functions")]["spec"]["podSelector"]["matchLabels"] == LABELS
    secrets = [s["secretRef"]["name"] for s in container()["envFrom"] if "secretRef" in s]
    assert (
        secrets == ["functions-api-key"]
        and "FUNCTIONS_API_KEY" in objects()[("Secret", secrets[0])]["stringData"]
    )


def workspace_map(text: str) -> list[str]:
    """The lines of `map $uri $functions_workspace { ... }` in an nginx configuration."""
    found = re.search(MAP_START + r"(.*?)\}", text, re.DOTALL)
    assert found, "no map $uri $functions_workspace"
    return [" ".join(line.split()) for line in found[1].strip().splitlines()]


def test_the_ingress_hashes_on_the_workspace_as_plain_nginx_does() -> None:
    ingress = objects()[("Ingress", "functions")]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/upstream-hash-by"] == (
        "$functions_workspace"
    )
    snippet = objects()[("ConfigMap", "ingress-nginx-controller")]["data"]["http-snippet"]
    assert workspace_map(snippet) == WORKSPACE_MAP
    nginx = [p for p in NGINX.rglob("*") if p.is_file() and re.search(MAP_START, p.read_text())]
    for path in nginx:  # deploy/nginx/'s configuration, once it exists, must hash the same way
        assert workspace_map(path.read_text()) == WORKSPACE_MAP, path
    regex = re.compile(WORKSPACE_MAP[0].split('"')[1][1:].replace("(?<", "(?P<"))
    for uri, workspace in [("/v2/functions/a.b-c_9/run/f", "a.b-c_9"), ("/v2/functions/w", "w")]:
        match = regex.match(uri)
        assert match and match["ws"] == workspace and WORKSPACE_ID.fullmatch(match["ws"])
    assert regex.match("/v2/functions") is None and regex.match("/sys/healthcheck") is None


def test_the_ingress_waits_for_saves_and_passes_the_largest_body() -> None:
    annotations = objects()[("Ingress", "functions")]["metadata"]["annotations"]
    settings = load_settings(settings_data(), tty=False)
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > settings.npm_install_timeout_s
    body = re.fullmatch(r"(\d+)m", annotations["nginx.ingress.kubernetes.io/proxy-body-size"])
    assert body and int(body[1]) * 1024 * 1024 > settings.request_max_size
    for rule in objects()[("Ingress", "functions")]["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"] == {"name": "functions", "port": {"name": "http"}}
            assert not path["path"].startswith(("/sys", "/metrics")), "health and metrics stay inside"


def test_the_container_is_unprivileged_but_lets_the_egress_wall_copy_descriptors() -> None:
    """RuntimeDefault seccomp allows pidfd_getfd only where SYS_PTRACE is listed (docs/deploy.md); the
    process is not root and has no_new_privs, so it never holds that capability."""
    pod = objects()[("Deployment", "functions")]["spec"]["template"]["spec"]
    context = container()["securityContext"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["SYS_PTRACE"]}
    assert "privileged" not in context
