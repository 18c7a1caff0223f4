#!/usr/bin/env python3
"""Drive the real twccli (twcc-cli 0.6.1) against snapcron's TWCC stand-in and check every reply is accepted.

Run by TWCCCLIValidationTests (Tests/TWCCBackendTests) with the stand-in already listening; see
docs/backends.md. Steps follow twcc-api.md section 10: the installed package's YAML host is pointed at the stand-in,
and $TWCC_DATA_PATH is pre-seeded (log/, credential, releases.xml) so that the client never goes to the internet.
Exit status 0 when every command behaved; otherwise the failures are printed, one per line.
"""
import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

TWCC_CLI_VERSION = "0.6.1"


def patch_host(venv: pathlib.Path, base_url: str) -> None:
    """Points the package YAML (the only place twccli reads its host from) at the stand-in."""
    found = list(venv.glob("lib/python*/site-packages/twccli/yaml/TWCC_API.yaml"))
    if len(found) != 1:
        sys.exit(f"cannot find twccli/yaml/TWCC_API.yaml in {venv}")
    text = found[0].read_text()
    patched, count = re.subn(r'(?m)^(  host: ).*$', rf'\g<1>"{base_url}"', text, count=1)
    if count != 1:
        sys.exit("no production.host line in TWCC_API.yaml")
    found[0].write_text(patched)


def seed_data_path(data: pathlib.Path, api_key: str, project: int, username: str) -> None:
    (data / "log").mkdir(parents=True, exist_ok=True)
    # No _meta.ga_cid: no analytics posts. cli_version equal to the installed one: no re-init.
    (data / "credential").write_text(
        "_default:\n"
        f"  twcc_api_key: {api_key}\n"
        "  twcc_proj_code: SNAPCRON\n"
        f"  twcc_username: {username}\n"
        "  twcc_s3_access_key: unused\n"
        "  twcc_s3_secret_key: unused\n"
        "_meta:\n"
        f"  cli_version: {TWCC_CLI_VERSION}\n"
        "  ctime: '2026-01-01 00:00:00'\n"
        "projects:\n"
        "  SNAPCRON:\n"
        f"    HPCJ: {project}\n"
        f"    COS: {project}\n"
        f"    CNTR: {project}\n"
        f"    VCS: {project}\n"
    )
    # The PyPI release feed, cached so that every start does not fetch it.
    (data / "releases.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>twcc-cli</title>'
        f"<item><title>{TWCC_CLI_VERSION}</title></item></channel></rss>\n"
    )


class Driver:
    def __init__(self, venv: pathlib.Path, data: pathlib.Path):
        self.twccli = str(venv / "bin" / "twccli")
        self.env = dict(os.environ)
        self.env.update(
            TWCC_DATA_PATH=str(data),
            # Any request that is not for the stand-in goes to a dead proxy and fails fast.
            HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
            http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
            NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
            LC_ALL="C.UTF-8", LANG="C.UTF-8",
        )
        self.env.pop("_TWCC_API_KEY_", None)
        self.env.pop("_TWCC_PROJECT_CODE_", None)
        self.failures = []

    def run(self, *args, expect_exit=0, env=None):
        full_env = dict(self.env, **(env or {}))
        done = subprocess.run([self.twccli, *args], env=full_env, capture_output=True, text=True, timeout=120)
        shown = " ".join(args)
        print(f"$ twccli {shown}  -> exit {done.returncode}")
        if done.stdout.strip():
            print(done.stdout.rstrip())
        if done.stderr.strip():
            print("stderr: " + done.stderr.rstrip())
        if done.returncode != expect_exit:
            self.fail(f"twccli {shown}: exit {done.returncode}, expected {expect_exit}")
        if "Traceback" in done.stdout + done.stderr:
            self.fail(f"twccli {shown}: the client crashed on a reply")
        return done

    def json(self, done, what):
        try:
            return json.loads(done.stdout)
        except ValueError:
            self.fail(f"{what}: output is not JSON: {done.stdout[:200]!r}")
            return None

    def fail(self, message):
        print("FAIL: " + message)
        self.failures.append(message)

    def expect(self, condition, message):
        if not condition:
            self.fail(message)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--venv", required=True, type=pathlib.Path)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--project", required=True, type=int)
    parser.add_argument("--username", required=True)
    parser.add_argument("--site", default="101")
    parser.add_argument("--server", default=555, type=int)
    options = parser.parse_args()

    patch_host(options.venv, options.base_url)
    with tempfile.TemporaryDirectory(prefix="twcc-data-") as data_dir:
        data = pathlib.Path(data_dir)
        seed_data_path(data, options.api_key, options.project, options.username)
        d = Driver(options.venv, data)

        sites = d.json(d.run("ls", "vcs", "-json"), "ls vcs")
        d.expect(isinstance(sites, list) and any(str(s.get("id")) == options.site for s in sites),
                 f"ls vcs does not list site {options.site}")

        made = d.json(d.run("mk", "vcs", "-cus-img", "-s", options.site, "-n", "snapcronimg1", "-json"), "mk")
        # mk re-lists the project's images and prints those of the server with that name.
        made_list = made if isinstance(made, list) else [made] if isinstance(made, dict) else []
        ids = [m["id"] for m in made_list if isinstance(m, dict) and m.get("name") == "snapcronimg1"]
        d.expect(len(ids) == 1, f"mk vcs -cus-img printed {made!r}, not one image named snapcronimg1")
        image_id = str(ids[0]) if ids else "0"

        # -wait polls the image list until no image of the server is QUEUED.
        d.run("mk", "vcs", "-cus-img", "-s", options.site, "-n", "snapcronimg2", "-wait", "-json")

        one = d.json(d.run("ls", "vcsi", "-id", image_id, "-json"), "ls vcsi -id")
        d.expect(isinstance(one, list) and len(one) == 1 and str(one[0].get("id")) == image_id,
                 f"ls vcsi -id {image_id} printed {one!r}")
        mine = d.json(d.run("ls", "vcsi", "-json"), "ls vcsi")
        d.expect(isinstance(mine, list) and any(str(i.get("id")) == image_id for i in mine),
                 "ls vcsi (the user's own images) does not show the new image")
        d.expect(isinstance(mine, list) and not any(i.get("is_public") for i in mine),
                 "ls vcsi shows a public image")
        table = d.run("ls", "vcsi")
        d.expect("snapcronimg1" in table.stdout, "the ls vcsi table does not show snapcronimg1")
        of_site = d.json(d.run("ls", "vcs", "-cus-img", "-s", options.site, "-json"), "ls vcs -cus-img -s")
        d.expect(isinstance(of_site, list) and any(str(i.get("id")) == image_id for i in of_site),
                 "ls vcs -cus-img -s does not show the new image")

        d.run("rm", "vcs", "-cus-img", "-cus-img-id", image_id, "-f")
        gone = d.run("ls", "vcsi", "-id", image_id, "-json", expect_exit=1)
        d.expect("Error-Not found." in gone.stdout + gone.stderr,
                 "ls vcsi -id of a deleted image does not print [TWCC-CLI] Error-Not found.")

        bad = d.run("ls", "vcsi", "-json", expect_exit=1, env={"_TWCC_API_KEY_": "00000000-0000-0000-0000-000000000000"})
        d.expect("unauthorized" in (bad.stdout + bad.stderr), "a wrong key does not print the gateway's message")

        if d.failures:
            print(f"{len(d.failures)} failure(s)")
            return 1
        print("twccli accepted every reply")
        return 0


if __name__ == "__main__":
    sys.exit(main())
