"""docker/：Dockerfile 通过 hadolint、脚本通过 shellcheck，compose 的结构经得起部署（O9）。"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .helpers import ROOT, VENV_BIN, skip_or_fail
from .test_systemd_units import script_stop_timeouts

DOCKER = ROOT / "docker"
APP_SERVICES = ("migrate", "web", "bot", "worker", "beat")
PROCESSES = ("web", "bot", "worker", "beat")


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    if not found:
        skip_or_fail(f"没有 {name}（requirements/dev.txt 里固定了版本：make setup 会安装）")
    return found


def hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([tool("hadolint"), "--no-color", str(path)], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def test_dockerfile_has_no_hadolint_findings():
    done = hadolint(DOCKER / "Dockerfile")
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_hadolint_check_fails_on_a_finding(tmp_path):
    broken = (DOCKER / "Dockerfile").read_text(encoding="utf-8").replace(
        "USER 10001:10001", "RUN apt-get update && apt-get install -y curl\nUSER 10001:10001")
    (tmp_path / "Dockerfile").write_text(broken, encoding="utf-8")
    done = hadolint(tmp_path / "Dockerfile")
    assert done.returncode != 0 and "DL3008" in done.stdout


@pytest.mark.parametrize("script", ["bin/approvalbot", "docker/entrypoint.sh"])
def test_shell_scripts_have_no_shellcheck_findings(script):
    done = subprocess.run([tool("shellcheck"), str(ROOT / script)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def stages(dockerfile: str) -> list[str]:
    return re.split(r"^FROM ", dockerfile, flags=re.M)[1:]


def test_image_is_multi_stage_non_root_without_dev_dependencies():
    dockerfile = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    builder, runtime = stages(dockerfile)
    assert " AS builder" in builder.splitlines()[0]
    # 编译工具只在构建阶段；运行阶段只装运行库
    assert "gcc" in builder and "libmariadb-dev" in builder
    assert "gcc" not in runtime and "-dev" not in runtime and "libmariadb3" in runtime
    assert "requirements/prod.txt" in builder and "dev.txt" not in dockerfile
    user = re.search(r"^USER (\S+)", runtime, re.M).group(1)
    assert user.split(":")[0] not in ("root", "0")
    assert "collectstatic" in runtime
    assert re.search(r"^HEALTHCHECK .*\n?.*docker/healthcheck\.py", runtime, re.M)
    assert 'ENTRYPOINT ["/app/docker/entrypoint.sh"]' in runtime
    # 密钥、本地数据与开发环境不进构建上下文
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert {".env", "var/", ".venv/", "tests/"} <= set(ignored)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yml").read_text(encoding="utf-8"))


def test_every_app_service_runs_the_same_image_with_its_own_command(compose):
    services = compose["services"]
    assert set(services) == {"mysql", "redis", *APP_SERVICES}
    images = {(services[name]["image"], str(services[name].get("build"))) for name in APP_SERVICES}
    assert len(images) == 1 and services["web"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert {name: services[name]["command"] for name in APP_SERVICES} == {name: [name] for name in APP_SERVICES}
    assert services["migrate"]["restart"] == "no"


def test_processes_wait_for_migrate_and_healthy_database_and_broker(compose):
    services = compose["services"]
    for name in PROCESSES:
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "mysql": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }, name
    assert services["migrate"]["depends_on"] == {"mysql": {"condition": "service_healthy"},
                                                 "redis": {"condition": "service_healthy"}}
    for name in ("mysql", "redis"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    assert "--character-set-server=utf8mb4" in services["mysql"]["command"]


def test_web_has_a_healthcheck_and_the_other_processes_do_not_inherit_it(compose):
    services = compose["services"]
    assert services["web"]["healthcheck"]["test"][:2] == ["CMD", "python"]
    assert "/app/docker/healthcheck.py" in services["web"]["healthcheck"]["test"]
    for name in ("migrate", "bot", "worker", "beat"):
        assert services[name]["healthcheck"] == {"disable": True}, name


def test_every_service_limits_its_json_file_logs(compose):
    for name, service in compose["services"].items():
        logging = service["logging"]
        assert logging["driver"] == "json-file", name
        assert re.fullmatch(r"\d+[kmg]", logging["options"]["max-size"]), name
        assert int(logging["options"]["max-file"]) >= 1, name


def test_named_volumes_hold_the_var_dir_and_stop_grace_matches_the_other_layouts(compose):
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, (name, volume)
    for name in APP_SERVICES:
        assert "app-var:/app/var" in compose["services"][name]["volumes"], name
    # 备份、日志、配置备份写在卷里（镜像的 APP_VAR_DIR）
    assert "APP_VAR_DIR=/app/var" in (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    assert compose["services"]["web"]["environment"]["LOG_FILE"] == "/app/var/log/app.log"
    grace = {name: int(compose["services"][name]["stop_grace_period"].rstrip("s")) for name in PROCESSES}
    assert grace == script_stop_timeouts()


SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY", re.I)


def test_no_secret_is_written_into_the_compose_file(compose):
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), name
        for key, value in environment.items():
            value = str(value)
            if SECRET_NAME.search(key) and value != "yes":
                assert re.fullmatch(r"\$\{[A-Z_]+(:?[-?][^}]*)?\}", value), (name, key, value)
            # 地址里的口令也只能来自 .env
            credentials = re.search(r"://[^:/@]+:([^@]+)@", value)
            if credentials:
                assert credentials.group(1).startswith("${"), (name, key)
        for app in APP_SERVICES:
            assert compose["services"][app]["env_file"] == "../.env"
