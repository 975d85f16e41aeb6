"""MLflow sink: one parent run per harness run, one nested run per case, shaped the way MLflow users read runs.

- The experiment is tagged as a model-development one (`mlflow.experimentKind`), so MLflow 3's UI lists its runs
  instead of opening the GenAI view ("0 traces").
- A case's run is named `experiment.case param=value ...` and lasts from the case's real start to its end. Its
  headline metric (`wall_s`, or the case's own metric) is the median, one value, so tables, charts and
  `mlflow.search_runs` show the median; every sample is under `<metric>_sample` (one step each), warm-ups under
  `<metric>_warmup`, the interval and other stats as `<metric>_ci_low`, ...; numeric extras and Spark's own
  figures (`spark_tasks`, `spark_executor_run_time_s`, ...) beside them. Params are the case's params; tags say
  experiment, case, status, error, env id, code version (commit and the case's version), Spark version and master,
  machine (CPU model, cores).
- The parent is named after the run id and summarises it: params (targets, suite, repeats, warm-ups, timeout,
  Spark master), metrics (cases per status, `total_wall_s` over the cases, `run_wall_s` first start to last end),
  the same machine and version tags, results.jsonl, env.json and the report as artifacts. Its MLflow status says
  whether the run itself completed: FINISHED even when cases failed (`harness.status` and the case counts say how
  they went), KILLED when it was interrupted (Ctrl-C, SIGTERM), FAILED when the run itself broke (no worker could
  start).

`harness log RUN_DIR` produces the same shape from the run folder. Logging is idempotent: the parent is found
again by its `harness.run_id` tag and cases already logged are skipped, so a second `harness log` after a failed
or partial upload completes it without duplicates. Any MLflow failure disables the sink with a clear message; the
JSONL results are never at risk.

A tracking URI may carry credentials (`http://user:pw@host`): MLflow is handed the URI without them and reads
them from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, its own mechanism; `uri`, the form that is
printed, shows the password masked. Tags and params go through masking like everything else written.
"""
from __future__ import annotations

import logging
import math
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from ..masking import mask_mapping, mask_text, scrub
from ..record import Result

EXPERIMENT = os.environ.get("HARNESS_MLFLOW_EXPERIMENT", "spark-ml-harness")


def default_tracking_uri(results_root: Path) -> str:
    return f"sqlite:///{(results_root / 'mlflow.db').resolve()}"


def tracking_uri(given: str | None, results_root: Path) -> str:
    """The store a command logs to: --tracking-uri, else $MLFLOW_TRACKING_URI, else RESULTS/mlflow.db."""
    return given or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(results_root)


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


# MLflow 3's UI opens an experiment without this tag in its GenAI view (traces); this kind lists runs and metrics
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
RUN_STATUS = {"finished": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}  # how the run itself ended
MAX_NAME = 250  # MLflow's limit on a run name


class MlflowSink:
    def __init__(self, tracking_uri: str, results_root: Path):
        self.uri = mask_text(tracking_uri)  # the printable form
        self._client_uri, self._creds = split_credentials(tracking_uri)
        self.results_root = results_root
        self.client = None
        self.parent_id: str | None = None
        self.logged: set[str] = set()
        self.failure: str | None = None
        self.exp_id: str | None = None
        self.env: dict[str, Any] = {}

    def _fail(self, what: str, exc: BaseException) -> None:
        first = (str(exc).splitlines() or [""])[0][:300]
        self.failure = scrub(f"MLflow logging failed while {what}: {type(exc).__name__}: {first}",
                             list(self._creds.values()))
        self.client = None

    @property
    def active(self) -> bool:
        return self.client is not None and self.parent_id is not None

    @property
    def ui_url(self) -> str | None:
        """The experiment's page in a tracking server's UI, opened as model-training runs (MLflow 3.17's UI picks
        its GenAI or model-training view from this query parameter or the browser's last choice, not from the
        experiment's tag); None for a local store."""
        if not self._client_uri.startswith(("http://", "https://")) or self.exp_id is None:
            return None
        return f"{self._client_uri.rstrip('/')}/#/experiments/{self.exp_id}?workflowType=machine_learning"

    def start(self, run_id: str, env: dict[str, Any], description: str = "", start_time: str | None = None) -> bool:
        """Finds or creates the parent run (started at `start_time`, ISO, default now); False (with `failure`
        set) when MLflow can't be used."""
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # its per-run lines break progress
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
                exp_id = client.create_experiment(EXPERIMENT, artifact_location=location,
                                                  tags=dict([EXPERIMENT_KIND]))
            else:
                exp_id = exp.experiment_id
                if exp.tags.get(EXPERIMENT_KIND[0]) is None:  # made by an older harness, or by hand
                    client.set_experiment_tag(exp_id, *EXPERIMENT_KIND)
            found = client.search_runs([exp_id], f"tags.`harness.run_id` = '{run_id}' and "
                                                 "tags.`harness.level` = 'parent'", max_results=1)
            if found:
                self.parent_id = found[0].info.run_id
                children = client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{self.parent_id}'",
                                              max_results=50000)
                self.logged = {c.data.tags.get("harness.identity") for c in children}
            else:
                tags = {**run_tags(env), "harness.run_id": run_id, "harness.level": "parent",
                        "harness.status": "running", "mlflow.note.content": description or f"harness run {run_id}"}
                run = client.create_run(exp_id, run_name=run_id, tags=mask_mapping(tags),
                                        start_time=_ms(start_time) or _now_ms())
                self.parent_id = run.info.run_id
            self.client, self.exp_id, self.run_id, self.env = client, exp_id, run_id, dict(env)
            return True
        except Exception as e:  # noqa: BLE001 - MLflow trouble must never lose results
            self._fail(f"connecting to {self.uri}", e)
            return False

    def case(self, r: Result, spark: dict[str, Any] | None = None) -> None:
        """Logs one case as a child run (once); `spark` is the run's Spark description once Spark started."""
        if not self.active or r.identity in self.logged:
            return
        from mlflow.entities import Metric, Param

        if spark:
            self.env["spark"] = spark
        try:
            common = run_tags(self.env, spark_master="spark" in r.extra)
            tags = {**common, "mlflow.parentRunId": self.parent_id, "harness.run_id": r.run_id,
                    "harness.level": "case", "harness.identity": r.identity, "experiment": r.experiment,
                    "case": r.case, "status": r.status, "env_id": r.env_id,
                    "code.version": f"{common['code.version']}, case {r.version}",
                    "metric": r.metric, "unit": r.unit, "better": r.better}
            if r.error:
                tags["error"] = f"{r.error['type']}: {r.error['message']}"[:4000]
            start, end = _ms(r.started_at) or _now_ms(), _ms(r.ended_at) or _now_ms()
            run = self.client.create_run(self.exp_id, run_name=case_run_name(r), tags=mask_mapping(tags),
                                         start_time=start)
            params = [Param(k, str(v)) for k, v in sorted(mask_mapping(r.params).items())]
            metrics = [Metric(k, v, end, step) for k, v, step in case_metrics(r)]
            for i in range(0, max(len(metrics), 1), 900):  # MLflow caps a batch at 1000 entries
                self.client.log_batch(run.info.run_id, metrics=metrics[i:i + 900], params=params if i == 0 else [])
            status = "FINISHED" if r.status in ("ok", "unavailable", "skipped") else "FAILED"
            self.client.set_terminated(run.info.run_id, status, end_time=end)
            self.logged.add(r.identity)
        except Exception as e:  # noqa: BLE001
            self._fail(f"logging case {r.name}", e)

    def finish(self, results: list[Result], artifacts: list[Path], outcome: str = "finished",
               env: dict[str, Any] | None = None) -> None:
        """Summarises the run on the parent (params, case counts, wall time, tags), uploads the artifacts and
        ends it: `outcome` is how the run itself ended (finished / interrupted / failed, see RUN_STATUS)."""
        if not self.active:
            return
        from mlflow.entities import Metric, Param, RunTag

        env = env or self.env
        try:
            existing = self.client.get_run(self.parent_id).data.params
            params = [Param(k, v) for k, v in run_params(env, results).items() if k not in existing]
            counts = {s: sum(r.status == s for r in results) for s in ("ok", "error", "timeout", "unavailable")}
            end = max((_ms(r.ended_at) or 0 for r in results), default=0) or _now_ms()
            metrics = [Metric(f"cases_{s}", n, end, 0) for s, n in counts.items()]
            spans = [(_ms(r.started_at), _ms(r.ended_at)) for r in results]
            spans = [(a, b) for a, b in spans if a and b]
            if spans:
                metrics += [Metric("total_wall_s", sum(b - a for a, b in spans) / 1000.0, end, 0),
                            Metric("run_wall_s", (max(b for _, b in spans) - min(a for a, _ in spans)) / 1000.0,
                                   end, 0)]
            failed = counts["error"] + counts["timeout"]
            status = (f"{failed} of {len(results)} case(s) failed" if failed else "ok") if outcome == "finished" \
                else outcome
            tags = [RunTag(k, v) for k, v in mask_mapping({**run_tags(env), "harness.status": status}).items()]
            self.client.log_batch(self.parent_id, metrics=metrics, params=params, tags=tags)
            for path in artifacts:
                if path.is_file():
                    self.client.log_artifact(self.parent_id, str(path))
                elif path.is_dir():
                    self.client.log_artifacts(self.parent_id, str(path), artifact_path=path.name)
            self.client.set_terminated(self.parent_id, RUN_STATUS[outcome], end_time=end)
        except Exception as e:  # noqa: BLE001
            self._fail("summarising the run", e)


def run_tags(env: dict[str, Any], spark_master: bool = True) -> dict[str, str]:
    """Tags every run of a harness run carries: machine, versions, code; the Spark master where Spark ran (the
    parent, and cases with Spark figures), so that a live run and `harness log` tag the same runs."""
    machine, git, spark = env.get("machine") or {}, env.get("git") or {}, env.get("spark") or {}
    commit = git.get("commit")
    tags = {"machine.cpu": str(machine.get("cpu_model")), "machine.cores": str(machine.get("cores")),
            "env_id": str(env.get("env_id")),
            "code.version": f"{commit or 'unknown'}{' (dirty)' if git.get('dirty') else ''}",
            "spark.version": str(spark.get("version") or (env.get("packages") or {}).get("pyspark"))}
    if spark_master and spark.get("master"):
        tags["spark.master"] = str(spark["master"])
    if commit:
        tags["mlflow.source.git.commit"] = commit
    tags.update({"mlflow.source.name": "harness", "mlflow.source.type": "LOCAL"})
    return tags


def run_params(env: dict[str, Any], results: list[Result]) -> dict[str, str]:
    """The parent's params: what was run and how (from env.json's `invocation`, else from the records)."""
    inv = env.get("invocation") or {}
    repeats = sorted({len(r.samples) for r in results if r.status == "ok"})
    params = {"targets": " ".join(inv.get("targets") or sorted({r.experiment for r in results})),
              "suite": inv.get("suite"),
              "repeats": inv.get("repeats") if inv.get("repeats") is not None else ",".join(map(str, repeats)),
              "warmup": inv.get("warmup"), "timeout_s": inv.get("timeout_s"),
              "master": (env.get("spark") or {}).get("master") or inv.get("master"),
              "cases": len(results)}
    return {k: str(v)[:500] for k, v in mask_mapping(params).items() if v not in (None, "")}


def case_run_name(r: Result) -> str:
    """`udf.pandas_udf rows=1000000 workload=plus_one`: unique in its run (params are the identity)."""
    name = " ".join([r.name] + [f"{k}={v}" for k, v in sorted(r.params.items())])
    if len(name) > MAX_NAME:
        import hashlib

        digest = hashlib.sha256(r.identity.encode()).hexdigest()[:8]
        name = name[:MAX_NAME - 12] + f"... {digest}"
    return mask_text(name)


def case_metrics(r: Result) -> list[tuple[str, float, int]]:
    """(key, value, step): the median as the headline, samples and warm-ups as steps, stats, extras, Spark's."""
    out = []
    if _num(r.stats.get("median")):
        out.append((r.metric, float(r.stats["median"]), 0))
    out += [(f"{r.metric}_sample", float(v), i) for i, v in enumerate(r.samples)]
    out += [(f"{r.metric}_warmup", float(v), i) for i, v in enumerate(r.warmup)]
    out += [(f"{r.metric}_{k}", float(v), 0) for k, v in r.stats.items() if k != "median" and _num(v)]
    for k, v in r.extra.items():
        if _num(v):
            out.append((k, float(v), 0))
        elif isinstance(v, list) and v and all(_num(x) for x in v):  # series (e.g. quality over time): steps
            out += [(k, float(x), i) for i, x in enumerate(v)]
    spark = r.extra.get("spark")
    if isinstance(spark, dict):
        out += [(f"spark_{k}", float(v), 0) for k, v in spark.items() if _num(v)]
    return out


def _ms(iso: str | None) -> int | None:
    """Epoch milliseconds of an ISO timestamp (the records' started_at / ended_at), None if unreadable."""
    if not iso:
        return None
    try:
        return int(datetime.fromisoformat(iso).timestamp() * 1000)
    except (TypeError, ValueError):
        return None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
