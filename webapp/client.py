"""A command-line client of the lab's JSON API (standard library only).

    python -m webapp.client --url http://lab:8000 --token KEY submit job.json   # {"kind": ..., "config": ...}
    python -m webapp.client --url http://lab:8000 --token KEY jobs [--status running]
    python -m webapp.client --url http://lab:8000 --token KEY show 12
    python -m webapp.client --url http://lab:8000 --token KEY cancel 12 | retry 12
    python -m webapp.client ... leaderboard | datasets

--url and --token default to $LAB_URL and $LAB_TOKEN. A refused request prints the server's field errors and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, payload: Any):
        self.status, self.payload = status, payload
        super().__init__(f"HTTP {status}: {payload}")


class LabClient:
    def __init__(self, url: str, token: str, *, timeout: float = 30.0):
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def request(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}{query}", data=data, method=method, headers={
            "Authorization": f"Token {self.token}", "Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = raw.decode(errors="replace")[:500]
            raise ApiError(exc.code, payload) from None

    def submit(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        return self.request("POST", "/api/jobs", payload)["jobs"]

    def jobs(self, **filters: str) -> list[dict[str, Any]]:
        return self.request("GET", "/api/jobs", params={k: v for k, v in filters.items() if v})["jobs"]

    def show(self, job_id: int) -> dict[str, Any]:
        return self.request("GET", f"/api/jobs/{job_id}")

    def cancel(self, job_id: int) -> dict[str, Any]:
        return self.request("POST", f"/api/jobs/{job_id}/cancel")

    def retry(self, job_id: int) -> dict[str, Any]:
        return self.request("POST", f"/api/jobs/{job_id}/retry")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m webapp.client", description="XDC Lab API client")
    parser.add_argument("--url", default=os.environ.get("LAB_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("LAB_TOKEN", ""))
    commands = parser.add_subparsers(dest="command", required=True)
    submit = commands.add_parser("submit", help="submit jobs from a JSON file ({kind, config|configs, grid, ...})")
    submit.add_argument("file", help="JSON file, or - for standard input")
    jobs = commands.add_parser("jobs", help="list jobs")
    for name in ("status", "variant", "kind", "user"):
        jobs.add_argument(f"--{name}", default="")
    for name in ("show", "cancel", "retry"):
        commands.add_parser(name, help=f"{name} a job").add_argument("job_id", type=int)
    commands.add_parser("leaderboard", help="print the leaderboard as JSON")
    commands.add_parser("datasets", help="list datasets")
    return parser


def _load(file: str) -> dict[str, Any]:
    text = sys.stdin.read() if file == "-" else Path(file).read_text()
    payload = json.loads(text)
    if isinstance(payload, dict) and "config" not in payload and "configs" not in payload:
        payload = {"config": payload}  # a bare config file (as `xdc pretrain --config` takes, in JSON)
    return payload


def _print_jobs(jobs: list[dict[str, Any]]) -> None:
    for job in jobs:
        print(f"#{job['id']:<5} {job['kind']:<9} {job['status']:<10} {job['progress'] * 100:5.1f}%  {job['summary']}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.token:
        print("error: give --token or set LAB_TOKEN (python manage.py create_token USER)", file=sys.stderr)
        return 2
    client = LabClient(args.url, args.token)
    try:
        if args.command == "submit":
            jobs = client.submit(_load(args.file))
            _print_jobs(jobs)
        elif args.command == "jobs":
            _print_jobs(client.jobs(status=args.status, variant=args.variant, kind=args.kind, user=args.user))
        elif args.command in ("show", "cancel", "retry"):
            print(json.dumps(getattr(client, args.command)(args.job_id), indent=2))
        elif args.command == "leaderboard":
            print(json.dumps(client.request("GET", "/api/leaderboard"), indent=2))
        elif args.command == "datasets":
            print(json.dumps(client.request("GET", "/api/datasets"), indent=2))
    except ApiError as exc:
        print(f"error: HTTP {exc.status}", file=sys.stderr)
        print(json.dumps(exc.payload, indent=2) if not isinstance(exc.payload, str) else exc.payload, file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
