"""``dockvol plugin build|push|config``: package a driver as a managed (v2) Docker plugin."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _add_host(p: argparse.ArgumentParser) -> None:
    p.add_argument("-H", "--host", help="engine to use (default: DOCKER_HOST, else the local one)")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plugin",
        help="build and push managed Docker plugins",
        description="Package a dockvol driver as a managed Docker plugin.",
    )
    sub = parser.add_subparsers(dest="plugin_command", metavar="ACTION", required=True)

    b = sub.add_parser(
        "build",
        help="build the rootfs, write config.json, docker plugin create",
        description="Build a managed plugin and create it in the engine.",
    )
    b.add_argument("name", metavar="NAME[:TAG]", help="plugin name, e.g. me/dockvol-local:1.0")
    b.add_argument(
        "--driver",
        default="local",
        help="local, block, shared, or your own module:Class (found in the current directory "
        "first, as dockvol serve finds it; its source is shipped in the plugin); default: local",
    )
    b.add_argument(
        "--base-image",
        metavar="IMAGE",
        help="image with python3 of this Python's version (default: python:X.Y-slim)",
    )
    b.add_argument("--platform", help="target platform, e.g. linux/arm64 (fetches wheels)")
    b.add_argument(
        "--python-version",
        metavar="X.Y",
        help="Python of the base image when it differs from this one (fetches wheels)",
    )
    b.add_argument(
        "--apt-package",
        action="append",
        default=[],
        metavar="PKG",
        help="extra Debian package for the rootfs (needs network; repeatable)",
    )
    b.add_argument("--log-level", default="info", help="default DOCKVOL_LOG_LEVEL")
    b.add_argument(
        "--csi",
        action="store_true",
        help="a CSI plugin for Swarm cluster volumes (docker volume create --type mount ...)",
    )
    _add_host(b)
    b.set_defaults(func=_build)

    p = sub.add_parser(
        "push",
        help="docker plugin push, with progress",
        description="Push a plugin to its registry.",
    )
    p.add_argument("name", metavar="NAME[:TAG]")
    _add_host(p)
    p.set_defaults(func=_push)

    c = sub.add_parser("config", help="print the config.json a build would write")
    c.add_argument("--driver", default="local")
    c.add_argument("--name", default="dockvol", help="plugin name (for DOCKVOL_NAME)")
    c.add_argument("--csi", action="store_true", help="the config of a CSI plugin")
    c.set_defaults(func=_config)


def _build(args: argparse.Namespace) -> int:
    from dockvol._packaging.build import BuildOptions, build
    from dockvol._packaging.docker import Docker, StepError

    opts = BuildOptions(
        name=args.name,
        driver=args.driver,
        base_image=args.base_image,
        platform=args.platform,
        python_version=args.python_version,
        apt_packages=args.apt_package,
        log_level=args.log_level,
        csi=args.csi,
    )
    try:
        result = build(opts, Docker(host=args.host))
    except StepError as e:
        print(f"dockvol plugin build: {e}", file=sys.stderr)
        return 1
    print(result.summary())
    return 0


def _push(args: argparse.Namespace) -> int:
    from dockvol._packaging.build import push
    from dockvol._packaging.docker import Docker, StepError

    try:
        print(push(args.name, Docker(host=args.host)))
    except StepError as e:
        print(f"dockvol plugin push: {e}", file=sys.stderr)
        return 1
    return 0


def _config(args: argparse.Namespace) -> int:
    import json

    from dockvol._packaging.build import load_driver
    from dockvol._packaging.config import plugin_config
    from dockvol._packaging.docker import StepError

    try:
        cls = load_driver(args.driver)
    except StepError as e:
        print(f"dockvol plugin config: {e}", file=sys.stderr)
        return 1
    config = plugin_config(args.name, args.driver, cls, csi=args.csi)
    print(json.dumps(config, indent=2))
    return 0
