"""The embedded stack (`studio up`): every service on its bind address (loopback by default: services.api_host,
redis_host, rtmp_host, http_host), started, watched and stopped here.

Children: redis-server (with a password kept in data/keys), nginx-rtmp, and the fleet role commands
(`studio worker` for ingest/render/publish, `studio api`, `studio scheduler`, `studio streamer`), run with this
interpreter as `python -m api ROLE`; each writes its JSON log lines to data/logs/NAME.log. Each is a
`workers.supervise.Supervised`: a child that exits is restarted after streamer.restart_pause_seconds; one that exits
more than streamer.max_restarts_per_minute times in a minute is left stopped and reported instead of spinning.
Stop is terminate, wait, kill: the role commands first, then nginx and redis.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from studio.binds import connect_host, exposure_warnings, host_port
from studio.config import Settings
from studio.keys import embedded_redis_password
from workers.streamer.nginx import accepts, port_in_use, render_nginx_conf, worker_user
from workers.streamer.publish_auth import PublishAuthError, private_dir, publish_auth_socket
from workers.supervise import Exit, Pacer, ProcessChild, RestartPolicy, Supervised

log = logging.getLogger("studio.stack")


class StackError(RuntimeError):
    pass


def wait_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if accepts(host, port):
            return True
        time.sleep(0.1)
    return False


INFRA = ("nginx", "redis")  # stopped last, so nothing loses its broker mid-task
STOP_SECONDS = {"nginx": 5.0, "redis": 5.0}  # the role commands get 15 s to finish what they do
STATES = {"running": "running", "failed": "failed"}  # anything else: between runs


@dataclass
class Child:
    name: str
    args: list[str]
    ready: tuple[str, int] | None = None  # (bind address, port) it listens on once started
    supervisor: Supervised | None = None


class Stack:
    def __init__(self, settings: Settings, *, config_path: Path, log_dir: Path):
        self.settings = settings
        self.svc = settings.services
        self.config_path = Path(config_path).resolve()
        self.log_dir = Path(log_dir)
        self.children: list[Child] = []
        self.redis_password = None if self.svc.redis_url else embedded_redis_password(settings)
        self.redis_url = settings.broker_url if self.svc.redis_url else \
            f"redis://:{self.redis_password}@{host_port(connect_host(self.svc.redis_host), self.svc.redis_port)}/0"

    # -- what to run -------------------------------------------------------------------------
    def plan(self) -> list[Child]:
        py, svc, data = sys.executable, self.svc, self.settings.data_path
        kids = []
        if not svc.redis_url:
            (data / "redis").mkdir(parents=True, exist_ok=True)
            kids.append(Child("redis", ["redis-server", str(self._redis_conf(data / "redis")),
                                        "--bind", svc.redis_host, "--port", str(svc.redis_port),
                                        "--dir", str(data / "redis"), "--appendonly", "yes", "--save", "",
                                        "--protected-mode", "yes", "--daemonize", "no"],
                              (svc.redis_host, svc.redis_port)))
        nginx_dir = data / "nginx"
        for sub in ("logs", "hls", "rec", "tmp"):
            (nginx_dir / sub).mkdir(parents=True, exist_ok=True)
        conf = nginx_dir / "nginx.conf"
        conf.write_text(render_nginx_conf(workdir=nginx_dir, rtmp_host=svc.rtmp_host, rtmp_port=svc.rtmp_port,
                                          http_host=svc.http_host, http_port=svc.http_port, user=worker_user(),
                                          publish_auth=publish_auth_socket(data)))
        kids.append(Child("nginx", ["nginx", "-c", str(conf), "-p", str(nginx_dir), "-e", "stderr"],
                          (svc.rtmp_host, svc.rtmp_port)))
        studio = [py, "-m", "api"]  # the `studio` command, with this interpreter
        # One host's renders: the CPU backend's queue (a GPU backend's avatars need a `studio worker` on a GPU host).
        for queue, conc in (("ingest", 1), ("render.cpu", svc.render_concurrency), ("publish", 1)):
            kids.append(Child(f"worker-{queue}", [*studio, "worker", "--queues", queue, "--concurrency", str(conc),
                                                  "--name", f"{queue}@%h"]))
        kids.append(Child("api", [*studio, "api"], (svc.api_host, svc.api_port)))
        kids.append(Child("scheduler", [*studio, "scheduler"]))
        kids.append(Child("streamer", [*studio, "streamer", "--no-ingest"]))  # nginx above is its ingest
        return kids

    def _redis_conf(self, folder: Path) -> Path:
        """A config file (mode 600) holding the password, so it is not on redis-server's command line."""
        conf = folder / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f'requirepass "{self.redis_password}"\n')
        return conf

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(STUDIO_CONFIG=str(self.config_path), STUDIO_DATA_DIR=str(self.settings.data_path),
                   STUDIO_REDIS_URL=self.redis_url, PYTHONUNBUFFERED="1")
        return env

    # -- lifecycle ---------------------------------------------------------------------------
    def check_ports(self) -> None:
        svc = self.svc
        binds = {"api": (svc.api_host, svc.api_port), "rtmp": (svc.rtmp_host, svc.rtmp_port),
                 "http": (svc.http_host, svc.http_port)}
        if not svc.redis_url:
            binds["redis"] = (svc.redis_host, svc.redis_port)
        busy = [f"{name} {host_port(*bind)}" for name, bind in binds.items() if port_in_use(*bind)]
        if busy:
            raise StackError("port already in use: " + ", ".join(busy) +
                             "; stop whatever holds it or choose other ports (STUDIO_API_PORT, STUDIO_REDIS_PORT, "
                             "STUDIO_RTMP_PORT, STUDIO_HTTP_PORT)")

    def start(self) -> None:
        self.check_ports()
        try:  # the streamer's publish check, which nginx asks: a folder only this user can write
            private_dir(publish_auth_socket(self.settings.data_path).parent)
        except PublishAuthError as exc:
            raise StackError(str(exc)) from None
        for warning in exposure_warnings(self.svc):
            log.warning("%s", warning)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.settings.streamer
        policy = RestartPolicy(pause=cfg.restart_pause_seconds, steady=cfg.max_restarts_per_minute,
                               give_up_after=cfg.max_restarts_per_minute)
        try:
            for child in self.plan():
                self.children.append(child)
                first = self._spawn(child)  # one that cannot start at all is an error now, not a crash loop
                child.supervisor = Supervised(
                    child.name, lambda c=child: self._spawn(c), pace=self._pacer(child.name, policy),
                    restart_clean_exit=True, every=1.0, stop_timeout=STOP_SECONDS.get(child.name, 15.0),
                    running=first).start()
                if child.ready and not wait_port(*child.ready, 20):
                    raise StackError(f"{child.name} did not open {host_port(*child.ready)} within 20 s; "
                                     f"see {self.log_dir / (child.name + '.log')}:\n{self.log_tail(child.name)}")
        except BaseException:
            self.stop()
            raise

    def _spawn(self, child: Child) -> ProcessChild:
        logf = open(self.log_dir / f"{child.name}.log", "ab")  # noqa: SIM115 (owned by the child process)
        proc = subprocess.Popen(child.args, env=self.env(), stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, umask=0o077)
        logf.close()
        log.info("started %s (pid %d)", child.name, proc.pid)
        return ProcessChild(proc, name=child.name)

    def _pacer(self, name: str, policy: RestartPolicy):
        """The policy's pacing, with the service's own log shown when it is left stopped."""
        pacer = Pacer(policy)

        def pace(exit: Exit) -> float | None:
            delay = pacer(exit)
            if delay is None:
                log.error("%s is left stopped; its log ends:\n%s", name, self.log_tail(name))
            return delay
        return pace

    def status(self) -> dict[str, str]:
        return {c.name: STATES.get(c.supervisor.state, "restarting") for c in self.children if c.supervisor}

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the app processes first, then nginx and redis, so nothing loses its broker mid-task; the
        processes of each group stop together (terminate, wait, kill)."""
        apps = [c.supervisor for c in reversed(self.children) if c.name not in INFRA and c.supervisor]
        infra = [c.supervisor for c in reversed(self.children) if c.name in INFRA and c.supervisor]
        for group in (apps, infra):
            for supervisor in group:
                supervisor.request_stop()
            for supervisor in group:
                supervisor.join(supervisor.stop_timeout + 5.0)
        self.children.clear()


OPERATOR_KEY_FILE = "operator-api.key"


def write_operator_key(rt) -> Path:
    """The machine operator's admin API key for the API this stack serves, fresh at each start (the last one is
    revoked), written beside the policy key (mode 0600) for local tools: `curl -H "Authorization: Bearer $(cat
    data/keys/operator-api.key)" ...`."""
    from sqlmodel import Session

    from studio.accounts import ensure_operator_key
    from studio.storage import atomic_path

    with Session(rt.engine) as session:
        key = ensure_operator_key(session)
    path = rt.data.keys / OPERATOR_KEY_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(key + "\n")
    return path
