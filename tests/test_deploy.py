"""The deployment files: Dockerfile, compose, nginx, Kubernetes manifests, and the installed
console script that the image's ENTRYPOINT runs."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dockerfile
import httpx
import kubernetes_validate
import pytest
import yaml

from sluice import config
from sluice.drain import BACKSTOP_S
from tests.conftest import ROOT, free_port

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
ENV = {
    "SLUICE_DATABASE_URL": "postgresql://sluice:pw@postgres:5432/sluice",
    "SLUICE_REDIS_URL": "redis://redis:6379/0",
    "SLUICE_ADMIN_KEY": "admin-key-for-the-test",
}


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _k8s() -> dict[str, dict[str, Any]]:
    """kind → the manifest (one of each kind here)."""
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _load_all(path):
            docs[doc["kind"]] = doc
    return docs


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


# --- Kubernetes -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_k8s_manifest_validates_against_the_schema(path: Path) -> None:
    for doc in _load_all(path):
        if doc["kind"] == "Kustomization":
            for res in doc["resources"]:
                assert (K8S / res).is_file(), res
            continue
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_k8s_config_is_a_valid_sluice_config() -> None:
    cm = _k8s()["ConfigMap"]
    settings = config.from_mapping(
        config.substitute(yaml.safe_load(cm["data"]["sluice.yaml"]), ENV)
    )
    assert settings.storage.url == ENV["SLUICE_DATABASE_URL"]
    assert settings.redis.url == ENV["SLUICE_REDIS_URL"]


def test_k8s_deployment_probes_drain_and_security() -> None:
    docs = _k8s()
    cm = yaml.safe_load(docs["ConfigMap"]["data"]["sluice.yaml"])
    drain = cm["server"]["drain_timeout_s"]
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain + BACKSTOP_S
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["args"][0] == "serve"
    assert {"name": "SLUICE_CONFIG", "value": "/etc/sluice/sluice.yaml"} in c["env"]
    assert c["envFrom"] == [{"secretRef": {"name": docs["Secret"]["metadata"]["name"]}}]
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert "/etc/sluice" in mounts and "/var/lib/sluice" in mounts  # writable working dir
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == c["ports"][0]["name"]
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == "sluice"
    job = docs["Job"]["spec"]["template"]["spec"]
    assert job["containers"][0]["args"] == ["db", "upgrade"]
    assert job["containers"][0]["image"] == c["image"]


# --- compose and nginx ----------------------------------------------------------------------


def test_compose_wires_two_gateways_behind_nginx() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "gateway-1", "gateway-2", "nginx"}
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    sluice_yaml = yaml.safe_load((DEPLOY / "sluice.yaml").read_text())
    for name in ("gateway-1", "gateway-2"):
        gw = services[name]
        assert gw["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert gw["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "/health/ready" in " ".join(gw["healthcheck"]["test"])
        assert gw["environment"]["SLUICE_DATABASE_URL"].startswith("postgresql://")
        assert gw["environment"]["SLUICE_REDIS_URL"].startswith("redis://redis:")
        grace = int(gw["stop_grace_period"].removesuffix("s"))
        assert grace > sluice_yaml["server"]["drain_timeout_s"] + BACKSTOP_S
    for name in ("postgres", "redis", "nginx"):
        assert services[name]["healthcheck"]["test"]
    assert services["nginx"]["depends_on"]["gateway-1"]["condition"] == "service_healthy"
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]
    assert (DEPLOY / "compose.yaml").parent.joinpath(
        services["gateway-1"]["build"]["context"], "Dockerfile"
    ).resolve() == ROOT / "Dockerfile"


def test_compose_sluice_yaml_is_a_valid_config() -> None:
    settings = config.load_file(DEPLOY / "sluice.yaml", env=ENV)
    assert settings.storage.url == ENV["SLUICE_DATABASE_URL"]
    assert settings.server.host == "0.0.0.0"


def test_nginx_conf_proxies_sse_to_both_gateways() -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    upstream = re.search(r"upstream sluice \{(.*?)\}", conf, re.S)
    assert upstream is not None
    assert "server gateway-1:8787" in upstream.group(1)
    assert "server gateway-2:8787" in upstream.group(1)
    assert re.search(r"keepalive \d+;", upstream.group(1))
    for line in (
        "proxy_buffering off;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
    ):
        assert line in conf


def test_nginx_conf_passes_nginx_t(tmp_path: Path) -> None:
    if shutil.which("nginx") is None:  # `make test` installs it (system-deps)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("nginx is not installed (required under CI=true)")
        pytest.skip("nginx is not installed (make system-deps installs it)")
    # The gateways' names resolve only inside compose: point them at loopback for the check.
    conf = (DEPLOY / "nginx.conf").read_text().replace("gateway-1:", "127.0.0.1:")
    conf = conf.replace("gateway-2:", "127.0.0.2:").replace("/tmp/nginx.pid", str(tmp_path / "pid"))
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx.conf").write_text(conf)
    out = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "syntax is ok" in out.stderr


# --- the image ------------------------------------------------------------------------------


def _stages() -> list[list[dockerfile.Command]]:
    """The Dockerfile parsed by BuildKit's own parser, split into stages."""
    stages: list[list[dockerfile.Command]] = []
    for cmd in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if cmd.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(cmd)
    return stages


def _one(stage: list[dockerfile.Command], name: str) -> dockerfile.Command:
    (cmd,) = [c for c in stage if c.cmd == name]
    return cmd


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    builder, final = _stages()
    assert builder[0].value == ("python:${PYTHON_VERSION}-slim", "AS", "builder")
    assert any("pip wheel" in c.value[0] for c in builder if c.cmd == "RUN")
    assert final[0].value == ("python:${PYTHON_VERSION}-slim",)
    assert "PYTHON_VERSION=3.11" in (ROOT / "Dockerfile").read_text()
    runs = " ".join(c.value[0] for c in final if c.cmd == "RUN")
    assert "apt-get" not in runs and "build-essential" not in runs  # no compilers
    copies = [c for c in final if c.cmd == "COPY"]
    assert [(c.flags, c.value) for c in copies] == [(("--from=builder",), ("/wheels", "/wheels"))]
    user = _one(final, "USER").value[0]
    assert user.split(":")[0] not in ("root", "0")
    assert _one(final, "EXPOSE").value == ("8787",)
    entrypoint, cmd = _one(final, "ENTRYPOINT"), _one(final, "CMD")
    assert entrypoint.json and entrypoint.value == ("sluice",)  # exec form: sluice gets SIGTERM
    assert cmd.json and cmd.value == ("serve", "--host", "0.0.0.0")
    for c in builder:
        if c.cmd == "COPY" and not c.flags:
            for src in c.value[:-1]:
                assert (ROOT / src).exists(), src
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert {"*", "!pyproject.toml", "!README.md", "!sluice"} <= set(ignore)


def _healthcheck_cmd() -> list[str]:
    check = _one(_stages()[1], "HEALTHCHECK")
    assert check.json and check.value[0] == "CMD"
    cmd = list(check.value[1:])
    assert cmd[:2] == ["python", "-c"]
    assert "urllib" in cmd[-1] and "/health/live" in cmd[-1]
    return cmd


# --- the installed package, as the image runs it --------------------------------------------


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new venv with Sluice installed from a clean `pip install .` (a wheel build, so
    package data and the console script are what users get). Its dependencies come from the
    test venv through a .pth line, to spare a minute of downloads per run."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "."],
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    site = Path(
        subprocess.check_output(
            [py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
    )
    (site / "zz_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    yield venv


def test_installed_console_script_runs(fresh_venv: Path, tmp_path: Path) -> None:
    sluice = fresh_venv / "bin" / "sluice"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SLUICE_CONFIG")}
    where = subprocess.check_output(
        [fresh_venv / "bin" / "python", "-c", "import sluice; print(sluice.__file__)"],
        cwd=tmp_path,
        env=env,
        text=True,
    )
    assert where.startswith(str(fresh_venv)), where  # the installed copy, not the checkout
    assert "serve" in subprocess.check_output([sluice, "--help"], env=env, text=True)
    out = subprocess.run(
        [sluice, "check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "configuration OK" in out.stdout, out.stderr
    subprocess.run([sluice, "db", "upgrade"], cwd=tmp_path, env=env, check=True, timeout=60)
    assert (tmp_path / "sluice.db").is_file()  # the packaged migrations ran


def test_image_command_serves_and_its_healthcheck_passes(fresh_venv: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SLUICE_CONFIG")}
    # ENTRYPOINT ["sluice"] + CMD ["serve", "--host", "0.0.0.0"] (+ a free port here).
    proc = subprocess.Popen(
        [fresh_venv / "bin" / "sluice", "serve", "--host", "0.0.0.0", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        cmd = _healthcheck_cmd()
        cmd[-1] = cmd[-1].replace(":8787/", f":{port}/")
        cmd[0] = str(fresh_venv / "bin" / "python")
        assert subprocess.run(cmd, env=env, timeout=10).returncode == 0
        assert httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).status_code == 200
        # Package data made it into the wheel: the dashboard's page and the migrations.
        assert httpx.get(f"http://127.0.0.1:{port}/ui", timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
