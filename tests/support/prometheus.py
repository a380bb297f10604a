"""A real Prometheus server on loopback, for the tests that need PromQL evaluated for real.

``make`` builds the server once per machine into ``~/.cache/userflux-connector/tools``
(``go install github.com/prometheus/prometheus/cmd/prometheus@`` the promtool version, so
the rules are checked and evaluated by the same engine); ``$PROMETHEUS`` names another
binary. That build has no web UI assets: the UI pages answer 500, the HTTP API (all the
tests use) works.

``PrometheusServer`` writes a configuration (the given scrape configs and rule files, a
short scrape and evaluation interval), starts the server on a free 127.0.0.1 port with
its storage in the given directory, in a process group of its own, and returns once
``/-/ready`` answers 200. When it cannot start, ``PrometheusError`` carries the last
lines of its log: a test that needs Prometheus fails then, it never skips. ``stop()``
(also registered with ``atexit``, and the server gets SIGKILL if the test process dies:
``tests/support/service_process.py``) ends the group.

    with PrometheusServer(tmp_path, scrape_configs=[...], rule_files=[rules]) as prom:
        prom.wait_for_target_up({"job": "uf-userflux-connector"})
        prom.query('up{namespace="streaming"}')
        prom.wait_for_alert("UserFluxConnectorDown", state="firing")

Every wait is bounded both in time and in the number of polls.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pathlib
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import yaml

from tests.support.service_process import LOG_TAIL_LINES, ServiceProcess, free_ports

DEFAULT_PROMETHEUS = pathlib.Path.home() / ".cache" / "userflux-connector" / "tools" / "prometheus"
T = TypeVar("T")


class PrometheusError(RuntimeError):
    """Prometheus could not start, answered an error, or a wait ran out."""


class PrometheusMissing(PrometheusError):
    pass


class WaitAborted(PrometheusError):
    """Raised by a wait's probe to stop waiting at once (the awaited state cannot come)."""


def prometheus_path() -> pathlib.Path:
    """The server as `make` installs it ($PROMETHEUS, else the tools cache); raises if absent."""
    path = pathlib.Path(os.environ.get("PROMETHEUS") or DEFAULT_PROMETHEUS)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise PrometheusMissing(
            f"prometheus not found at {path}: `make prometheus` (or `make test`) installs it, "
            f"or set $PROMETHEUS to a prometheus server binary"
        )
    return path


def wait_until(what: str, probe: Callable[[], T | None], timeout_s: float, interval_s: float = 0.2) -> T:
    """Poll ``probe`` until it returns something other than None (or False); bounded by
    ``timeout_s`` and by ``timeout_s / interval_s + 1`` polls. Raises PrometheusError."""
    deadline = time.monotonic() + timeout_s
    polls = int(timeout_s / interval_s) + 1
    last_error: Exception | None = None
    for _ in range(polls):
        try:
            result = probe()
            if result is not None and result is not False:
                return result
        except WaitAborted:
            raise
        except PrometheusError as exc:  # the API not answering yet, for instance
            last_error = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(interval_s)
    detail = f" (last error: {last_error})" if last_error else ""
    raise PrometheusError(f"timed out after {timeout_s:g} s waiting for {what}{detail}")


class PrometheusServer:
    """One Prometheus server process; see the module docstring."""

    def __init__(
        self,
        work_dir: pathlib.Path,
        scrape_configs: Iterable[Mapping[str, Any]] = (),
        rule_files: Iterable[pathlib.Path] = (),
        *,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        binary: pathlib.Path | None = None,
        extra_args: Iterable[str] = (),
    ):
        self.work_dir = pathlib.Path(work_dir)
        self.scrape_configs = [dict(c) for c in scrape_configs]
        self.rule_files = [pathlib.Path(p).resolve() for p in rule_files]
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.binary = binary
        self.extra_args = list(extra_args)
        self.port: int | None = None
        self.config_path = self.work_dir / "prometheus.yml"
        self.log_path = self.work_dir / "prometheus.log"
        self._process = ServiceProcess("Prometheus", self.log_path)

    @property
    def url(self) -> str:
        if self.port is None:
            raise PrometheusError("Prometheus is not started")
        return f"http://127.0.0.1:{self.port}"

    # -- start and stop ----------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": self.scrape_configs,
        }

    def start(self, timeout_s: float = 30, attempts: int = 3) -> PrometheusServer:
        binary = self.binary or prometheus_path()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        attempts_made = itertools.count(1)

        def on_a_free_port() -> None:
            # A free port can be taken between the check and Prometheus' bind: try again.
            attempt = next(attempts_made)
            self.port = free_ports(1)[0]
            storage = self.work_dir / f"data-{attempt}"
            self._process.launch(
                [
                    str(binary),
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={storage}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                    # Hidden flag (5 s by default): how long new targets wait before
                    # the scrape manager takes them; a test has no 5 s to give.
                    "--scrape.discovery-reload-interval=200ms",
                    "--log.level=info",
                    *self.extra_args,
                ],
                f"prometheus on 127.0.0.1:{self.port}, attempt {attempt}",
                cwd=self.work_dir,
            )
            self._wait_ready(timeout_s)

        self._process.start(on_a_free_port, PrometheusError, attempts=attempts)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        def ready() -> bool:
            code = self._process.poll()
            if code is not None:
                raise _Exited(code)
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                    return response.status == 200
            except (urllib.error.URLError, OSError):
                return False

        try:
            wait_until("/-/ready", ready, timeout_s, interval_s=0.1)
        except _Exited as exc:
            raise self._fail(f"prometheus exited during start-up (exit {exc.code})") from None
        except PrometheusError as exc:
            raise self._fail(str(exc)) from None

    def _fail(self, message: str) -> PrometheusError:
        return PrometheusError(
            f"{message}\nconfig: {self.config_path}\nlast lines of {self.log_path}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return self._process.log_tail(lines)

    def stop(self, timeout_s: float = 10) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout_s``. Idempotent."""
        self._process.stop(timeout_s)

    def __enter__(self) -> PrometheusServer:
        return self if self._process.running() else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reload(self) -> None:
        """Re-read the configuration and the rule files (POST /-/reload)."""
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        request = urllib.request.Request(self.url + "/-/reload", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                if response.status != 200:
                    raise self._fail(f"reload answered {response.status}")
        except urllib.error.HTTPError as exc:
            raise self._fail(f"reload answered {exc.code}: {exc.read().decode(errors='replace')}") from None

    # -- the HTTP API ------------------------------------------------------------------

    def api(self, path: str, params: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> Any:
        """GET /api/v1/<path>; the ``data`` of a success, else PrometheusError with the
        server's error type and message."""
        query = urllib.parse.urlencode(list(params.items()) if isinstance(params, Mapping) else list(params))
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                body = json.loads(text)
            except json.JSONDecodeError:
                raise PrometheusError(f"GET {url}: HTTP {exc.code}: {text[:500]}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise PrometheusError(f"GET {url}: {exc}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"GET {url}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result (``[{metric, value}]`` for a vector)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.api("query", params)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float | str) -> list[dict[str, Any]]:
        """A range query's matrix (``[{metric, values}]``), as Grafana runs a time series panel."""
        step_text = step if isinstance(step, str) else f"{step:g}"
        return self.api(
            "query_range", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": step_text}
        )["result"]

    def label_values(
        self, label: str, match: Iterable[str] = (), start: float | None = None, end: float | None = None
    ) -> list[str]:
        """What Grafana's ``label_values(selector, label)`` asks: /api/v1/label/<label>/values."""
        params: list[tuple[str, Any]] = [("match[]", m) for m in match]
        if start is not None:
            params.append(("start", f"{start:.3f}"))
        if end is not None:
            params.append(("end", f"{end:.3f}"))
        return self.api(f"label/{urllib.parse.quote(label)}/values", params)

    def alerts(self) -> list[dict[str, Any]]:
        """Every pending or firing alert (/api/v1/alerts)."""
        return self.api("alerts")["alerts"]

    def rules(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The loaded rule groups (/api/v1/rules; ``kind`` "alert" or "record")."""
        return self.api("rules", {"type": kind} if kind else {})["groups"]

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets (/api/v1/targets)."""
        return self.api("targets", {"state": "active"})["activeTargets"]

    # -- waits ---------------------------------------------------------------------------

    def wait_for_target_up(self, labels: Mapping[str, str], timeout_s: float = 20) -> dict[str, Any]:
        """The active target whose labels include ``labels`` once its last scrape succeeded."""

        def up() -> dict[str, Any] | None:
            for target in self.targets():
                if all(target["labels"].get(k) == v for k, v in labels.items()) and target["health"] == "up":
                    return target
            return None

        try:
            return wait_until(f"a target {dict(labels)} to be up", up, timeout_s)
        except PrometheusError as exc:
            raise PrometheusError(f"{exc}\ntargets: {json.dumps(self._targets_summary(), indent=1)}") from None

    def _targets_summary(self) -> list[dict[str, Any]]:
        with contextlib.suppress(PrometheusError):
            return [
                {"labels": t["labels"], "health": t["health"], "lastError": t["lastError"], "scrapeUrl": t["scrapeUrl"]}
                for t in self.targets()
            ]
        return []

    def wait_for_series(self, expr: str, timeout_s: float = 20) -> list[dict[str, Any]]:
        """The instant query's result once it is not empty."""
        return wait_until(f"{expr!r} to return a series", lambda: self.query(expr) or None, timeout_s)

    def wait_for_alert(
        self, name: str, state: str = "firing", timeout_s: float = 30, labels: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """The alert ``name`` once it is in ``state`` ("pending" or "firing")."""

        def found() -> dict[str, Any] | None:
            for alert in self.alerts():
                if (
                    alert["labels"].get("alertname") == name
                    and alert["state"] == state
                    and all(alert["labels"].get(k) == v for k, v in (labels or {}).items())
                ):
                    return alert
            return None

        try:
            return wait_until(f"alert {name} to be {state}", found, timeout_s)
        except PrometheusError as exc:
            states = [(a["labels"].get("alertname"), a["state"]) for a in self.alerts()]
            raise PrometheusError(f"{exc}; alerts now: {states}") from None

    def wait_for_rule_evaluations(self, timeout_s: float = 20) -> list[dict[str, Any]]:
        """The rule groups once every group has been evaluated at least once without error."""

        def evaluated() -> list[dict[str, Any]] | None:
            groups = self.rules()
            errors = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r.get("lastError")]
            if errors:
                raise WaitAborted(f"rules failed to evaluate: {errors}")
            # A group not evaluated yet reports Go's zero time.
            done = bool(groups) and not any(g.get("lastEvaluation", "").startswith("0001-") for g in groups)
            return groups if done else None

        return wait_until("every rule group to be evaluated", evaluated, timeout_s)


class _Exited(Exception):
    def __init__(self, code: int | None):
        self.code = code
