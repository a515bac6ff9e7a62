"""docker/systemd/：systemd-analyze verify 通过，且停止超时、可写目录、进程角色与其余部署方式一致（O10）。"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from .helpers import ROOT, VENV_BIN, skip_or_fail

UNIT_DIR = ROOT / "docker" / "systemd"
ROLES = ("web", "bot", "worker", "beat")
INSTALL_DIR = "/opt/approvalbot"


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """简单的单元文件解析：续行、重复的键（值按出现顺序保存）。"""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit(role: str) -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT_DIR / f"approvalbot-{role}.service")


def environment(service: dict[str, list[str]]) -> dict[str, str]:
    pairs = " ".join(service.get("Environment", [])).split()
    return dict(pair.split("=", 1) for pair in pairs)


def systemd_analyze() -> str:
    binary = shutil.which("systemd-analyze")
    if not binary:
        skip_or_fail("没有 systemd-analyze（Debian 包 systemd；.ci/run 会安装）")
    return binary


def verify(unit_dir: Path) -> list[str]:
    """在 unit_dir 里校验全部单元；返回与我们的单元有关的每一条警告或错误（空列表 = 通过）。"""
    files = sorted(str(p) for p in unit_dir.iterdir() if p.suffix in (".service", ".target"))
    done = subprocess.run([systemd_analyze(), "verify", "--man=no", *files], capture_output=True, text=True,
                          timeout=60, cwd=unit_dir)
    findings = [line for line in (done.stdout + done.stderr).splitlines() if "approvalbot" in line]
    if done.returncode != 0 and not findings:
        findings = [f"systemd-analyze 退出码 {done.returncode}：{done.stdout}{done.stderr}"]
    return findings


def copy_units(tmp_path: Path, edit=lambda name, text: text) -> Path:
    """复制真实的单元文件，只把安装目录换成本仓库（与它的虚拟环境）：ExecStart 指向的程序必须真实存在。"""
    target = tmp_path / "units"
    target.mkdir()
    for path in UNIT_DIR.iterdir():
        text = path.read_text(encoding="utf-8").replace(f"{INSTALL_DIR}/.venv/bin", str(VENV_BIN))
        text = text.replace(INSTALL_DIR, str(ROOT))
        (target / path.name).write_text(edit(path.name, text), encoding="utf-8")
    return target


def test_all_units_pass_systemd_analyze_verify(tmp_path):
    assert sorted(p.name for p in UNIT_DIR.iterdir()) == sorted(
        [f"approvalbot-{role}.service" for role in ROLES] + ["approvalbot.target"])
    assert verify(copy_units(tmp_path)) == []


@pytest.mark.parametrize(("broken", "expected"), [
    (lambda text: text.replace("KillMode=mixed", "KilMode=mixed"), "Unknown key"),
    (lambda text: text.replace("Restart=on-failure", "Restart=sometimes"), "restart"),
    (lambda text: text.replace(".venv/bin/celery", ".venv/bin/celeri"), "not executable"),
])
def test_verify_reports_a_broken_unit(tmp_path, broken, expected):
    units = copy_units(tmp_path, lambda name, text: broken(text) if name == "approvalbot-worker.service" else text)
    findings = verify(units)
    assert findings and any(expected.lower() in line.lower() for line in findings), findings


@pytest.mark.parametrize("role", ROLES)
def test_each_service_runs_as_the_service_user_from_the_install_dir(role):
    service = unit(role)["Service"]
    assert service["User"] == ["approvalbot"] and service["Group"] == ["approvalbot"]
    assert service["WorkingDirectory"] == [INSTALL_DIR]
    assert service["EnvironmentFile"] == ["/etc/approvalbot/approvalbot.env"]
    assert service["ExecStart"][0].startswith(f"{INSTALL_DIR}/.venv/bin/")
    assert service["Restart"] == ["on-failure"] and int(service["RestartSec"][0]) > 0
    assert service["KillSignal"] == ["SIGTERM"] and service["KillMode"] == ["mixed"]
    # 进程角色决定日志文件名：四个进程各不相同
    assert environment(service)["APP_PROCESS"] == role
    assert unit(role)["Unit"]["PartOf"] == ["approvalbot.target"]
    assert unit(role)["Install"]["WantedBy"] == ["approvalbot.target"]


@pytest.mark.parametrize("role", ROLES)
def test_each_service_is_hardened_and_can_write_only_its_data_and_logs(role):
    service = unit(role)["Service"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "ProtectHome": "yes"}.items():
        assert service[key] == [value], key
    writable = " ".join(service["ReadWritePaths"]).split()
    var_dir = environment(service)["APP_VAR_DIR"]
    # SQLite（WAL）、文件系统 broker、备份、配置备份、构建日志归档都在 APP_VAR_DIR 下
    assert var_dir in writable and "/var/log/approvalbot" in writable
    assert service["StateDirectory"] == [Path(var_dir).name] and var_dir.startswith("/var/lib/")
    assert service["LogsDirectory"] == ["approvalbot"]


def exposure(path: Path) -> float:
    """systemd-analyze security 的总体暴露分（0 最安全，10 最差），离线计算，不需要运行中的 systemd。"""
    done = subprocess.run([systemd_analyze(), "security", "--offline=yes", "--no-pager", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=path.parent)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    return float(found.group(1))


def test_services_score_ok_in_systemd_security_analysis_and_weak_units_do_not(tmp_path):
    units = copy_units(tmp_path)
    for role in ROLES:
        assert exposure(units / f"approvalbot-{role}.service") <= 2.5, role
    weak = tmp_path / "weak"
    weak.mkdir()
    hardening = ("Protect", "Private", "NoNewPrivileges", "Restrict", "SystemCall", "Capability")
    text = (units / "approvalbot-beat.service").read_text(encoding="utf-8")
    (weak / "approvalbot-beat.service").write_text(
        "\n".join(line for line in text.splitlines() if not line.startswith(hardening)), encoding="utf-8")
    assert exposure(weak / "approvalbot-beat.service") > 5


def script_stop_timeouts() -> dict[str, int]:
    text = (ROOT / "bin" / "approvalbot").read_text(encoding="utf-8")
    declared = re.search(r"declare -A STOP_TIMEOUT=\(([^)]*)\)", text).group(1)
    return {name: int(seconds) for name, seconds in re.findall(r"\[(\w+)\]=(\d+)", declared)}


def graceful_timeout(command: str) -> int:
    return int(re.search(r"--graceful-timeout (\d+)", command).group(1))


def test_stop_timeouts_outlast_each_process_graceful_stop_and_match_the_start_script():
    timeouts = {role: int(unit(role)["Service"]["TimeoutStopSec"][0]) for role in ROLES}
    assert timeouts == script_stop_timeouts()
    web_command = unit("web")["Service"]["ExecStart"][0]
    assert timeouts["web"] > graceful_timeout(web_command)
    assert graceful_timeout((ROOT / "bin" / "approvalbot").read_text()) == graceful_timeout(web_command)
    assert graceful_timeout((ROOT / "docker" / "entrypoint.sh").read_text()) == graceful_timeout(web_command)
    # 热关闭要让正在跑的任务结束：任务硬超时之后还要留出余量
    assert timeouts["worker"] > settings.CELERY_TASK_TIME_LIMIT
    assert timeouts["beat"] <= timeouts["bot"] < timeouts["worker"]


def test_target_starts_all_four_and_beat_installs_its_own_schedule():
    target = parse_unit(UNIT_DIR / "approvalbot.target")
    assert sorted(" ".join(target["Unit"]["Wants"]).split()) == sorted(f"approvalbot-{r}.service" for r in ROLES)
    assert target["Install"]["WantedBy"] == ["multi-user.target"]
    beat = unit("beat")["Service"]["ExecStart"][0]
    # -S 会绕过 settings 里装入周期任务表的调度器
    assert beat.endswith("celery -A approvalbot beat --loglevel=INFO") and " -S" not in beat
    for path in [*UNIT_DIR.iterdir(), ROOT / "bin" / "approvalbot", ROOT / "docker" / "entrypoint.sh",
                 ROOT / "docker" / "compose.yml"]:
        assert "setup_periodic_tasks" not in path.read_text(encoding="utf-8"), path
