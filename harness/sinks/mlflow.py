"""MLflow sink: one parent run per harness run, one nested run per case.

Per case: params, the median and every sample as metric steps, numeric extras, tags (experiment, case,
status, env id, git commit, identity). The parent gets env.json and results.jsonl (and the report) as
artifacts. Logging is idempotent: the parent is found again by its `harness.run_id` tag and cases already
logged are skipped, so `harness log RUN_DIR` after a failed or partial upload completes it without duplicates.
Any MLflow failure disables the sink with a clear message; the JSONL results are never at risk.

A tracking URI may carry credentials (`http://user:pw@host`): MLflow is handed the URI without them and reads
them from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, its own mechanism; `uri`, the form that is
printed, shows the password masked. Tags and params go through masking like everything else written.
"""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from ..masking import mask_mapping, mask_text, scrub
from ..record import Result

EXPERIMENT = os.environ.get("HARNESS_MLFLOW_EXPERIMENT", "spark-ml-harness")


def default_tracking_uri(results_root: Path) -> str:
    return f"sqlite:///{(results_root / 'mlflow.db').resolve()}"


class MlflowUnavailable(RuntimeError):
    pass


def split_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """(the URI without user:password@, MLflow's environment variables for them); no userinfo: (uri, {})."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return uri, {}
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    creds = {"MLFLOW_TRACKING_USERNAME": unquote(user)}
    if password:
        creds["MLFLOW_TRACKING_PASSWORD"] = unquote(password)
    return urlunsplit(parts._replace(netloc=host)), creds


def check_reachable(uri: str, creds: dict[str, str] | None = None, timeout_s: float = 5.0) -> None:
    """Fails fast, with the fix, when an http(s) tracking server does not answer (`uri` without userinfo)."""
    if not uri.startswith(("http://", "https://")):
        return
    import base64
    import urllib.error
    import urllib.request

    request = urllib.request.Request(uri.rstrip("/") + "/health")
    if creds:
        pair = f"{creds['MLFLOW_TRACKING_USERNAME']}:{creds.get('MLFLOW_TRACKING_PASSWORD', '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
    try:
        urllib.request.urlopen(request, timeout=timeout_s).read()
    except (urllib.error.URLError, OSError) as e:
        raise MlflowUnavailable(f"MLflow tracking server {uri} is unreachable ({getattr(e, 'reason', e)}); "
                                "start it (scripts/mlflow-server.sh start) or pass another --tracking-uri") from None


class MlflowSink:
    def __init__(self, tracking_uri: str, results_root: Path):
        self.uri = mask_text(tracking_uri)  # the printable form
        self._client_uri, self._creds = split_credentials(tracking_uri)
        self.results_root = results_root
        self.client = None
        self.parent_id: str | None = None
        self.logged: set[str] = set()
        self.failure: str | None = None

    def _fail(self, what: str, exc: BaseException) -> None:
        first = (str(exc).splitlines() or [""])[0][:300]
        self.failure = scrub(f"MLflow logging failed while {what}: {type(exc).__name__}: {first}",
                             list(self._creds.values()))
        self.client = None

    @property
    def active(self) -> bool:
        return self.client is not None and self.parent_id is not None

    def start(self, run_id: str, env: dict[str, Any], description: str = "") -> bool:
        """Finds or creates the parent run; False (with `failure` set) when MLflow can't be used."""
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
        os.environ.update(self._creds)  # MLflow reads them at every request
        try:
            check_reachable(self._client_uri, self._creds)
            for name in ("alembic", "mlflow"):
                logging.getLogger(name).setLevel(logging.ERROR)
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=self._client_uri)
            exp = client.get_experiment_by_name(EXPERIMENT)
            if exp is None:
                location = None
                if self._client_uri.startswith("sqlite:"):
                    location = (self.results_root / "mlartifacts").resolve().as_uri()
                exp_id = client.create_experiment(EXPERIMENT, artifact_location=location)
            else:
                exp_id = exp.experiment_id
            found = client.search_runs([exp_id], f"tags.`harness.run_id` = '{run_id}' and "
                                                 "tags.`harness.level` = 'parent'", max_results=1)
            if found:
                self.parent_id = found[0].info.run_id
                children = client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{self.parent_id}'",
                                              max_results=50000)
                self.logged = {c.data.tags.get("harness.identity") for c in children}
            else:
                git = env.get("git", {})
                run = client.create_run(exp_id, run_name=run_id, tags=mask_mapping({
                    "harness.run_id": run_id, "harness.level": "parent", "harness.git_commit": str(git.get("commit")),
                    "harness.cpu": str(env.get("machine", {}).get("cpu_model")),
                    "mlflow.note.content": description or f"harness run {run_id}"}))
                self.parent_id = run.info.run_id
            self.client, self.exp_id, self.run_id, self.env = client, exp_id, run_id, env
            return True
        except Exception as e:  # noqa: BLE001 - MLflow trouble must never lose results
            self._fail(f"connecting to {self.uri}", e)
            return False

    def case(self, r: Result) -> None:
        if not self.active or r.identity in self.logged:
            return
        from mlflow.entities import Metric, Param

        try:
            ts = int(time.time() * 1000)
            tags = {"mlflow.parentRunId": self.parent_id, "harness.run_id": r.run_id, "harness.level": "case",
                    "harness.identity": r.identity, "experiment": r.experiment, "case": r.case, "status": r.status,
                    "env_id": r.env_id, "git_commit": str(self.env.get("git", {}).get("commit")),
                    "metric": r.metric, "unit": r.unit, "better": r.better}
            if r.error:
                tags["error"] = f"{r.error['type']}: {r.error['message']}"[:4000]
            run = self.client.create_run(self.exp_id, run_name=f"{r.name}", tags=mask_mapping(tags))
            params = [Param(k, str(v)) for k, v in sorted(mask_mapping(r.params).items())]
            metrics = [Metric(r.metric, v, ts, i) for i, v in enumerate(r.samples)]
            metrics += [Metric(f"warmup_{r.metric}", v, ts, i) for i, v in enumerate(r.warmup)]
            metrics += [Metric(f"{r.metric}_{k}", float(v), ts, 0) for k, v in r.stats.items() if _num(v)]
            metrics += [Metric(k, float(v), ts, 0) for k, v in r.extra.items() if _num(v)]
            for k, v in r.extra.items():  # series (e.g. quality over time) become steps
                if isinstance(v, list) and v and all(_num(x) for x in v):
                    metrics += [Metric(k, float(x), ts, i) for i, x in enumerate(v)]
            for i in range(0, len(metrics), 900):  # MLflow caps a batch at 1000 entries
                self.client.log_batch(run.info.run_id, metrics=metrics[i:i + 900], params=params if i == 0 else [])
            if not metrics:
                self.client.log_batch(run.info.run_id, params=params)
            self.client.set_terminated(run.info.run_id, "FINISHED" if r.status in ("ok", "unavailable", "skipped")
                                       else "FAILED")
            self.logged.add(r.identity)
        except Exception as e:  # noqa: BLE001
            self._fail(f"logging case {r.name}", e)

    def finish(self, artifacts: list[Path], failed: bool) -> None:
        if not self.active:
            return
        try:
            for path in artifacts:
                if path.is_file():
                    self.client.log_artifact(self.parent_id, str(path))
                elif path.is_dir():
                    self.client.log_artifacts(self.parent_id, str(path), artifact_path=path.name)
            self.client.set_terminated(self.parent_id, "FAILED" if failed else "FINISHED")
        except Exception as e:  # noqa: BLE001
            self._fail("uploading artifacts", e)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
