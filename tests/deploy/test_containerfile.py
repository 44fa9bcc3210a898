"""The Containerfile and the Makefile install the service the same way, and the image's settings are
the service's own. No image is built here (no container tool): this reads the recipe."""

import re
import tomllib
from importlib.metadata import packages_distributions, requires
from pathlib import PurePosixPath

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from adapters.node.runtime import MIN_NODE_MAJOR
from adapters.python.interpreter import SUBINTERPRETERS
from entrypoints.settings import PYTHON_PACKAGES, Settings, load_settings
from tests.deploy.files import (
    CONTAINERFILE,
    MAKEFILE,
    ROOT,
    container,
    exec_form,
    image_args,
    image_commands,
    image_env,
    instructions,
    make_commands,
    make_variables,
    objects,
    only,
)

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def pip_installs(commands: list[list[str]]) -> list[list[str]]:
    """The arguments after `-m pip install` of each pip install command."""
    found = []
    for cmd in commands:
        for n in range(len(cmd) - 2):
            if cmd[n : n + 3] == ["-m", "pip", "install"]:
                found.append(cmd[n + 3 :])
    return found


def split_install(args: list[str]) -> tuple[list[str], str, list[str]]:
    """(flags, the project's spec after -e, other requirements) of one `pip install` command."""
    assert "-e" in args, f"not an editable install of the project: {args}"
    at = args.index("-e")
    flags = [a for a in args if a.startswith("-") and a != "-e"]
    others = [a for n, a in enumerate(args) if not a.startswith("-") and n != at + 1]
    return flags, args[at + 1], others


def test_the_image_runs_the_steps_of_make_setup() -> None:
    """A venv named as make names it, pip upgraded the same way, the project installed editable with the
    same flags: the hosts' scripts (runtimes/) are read from the source tree, so only `-e` works."""
    venv = make_variables()["VENV"]
    make, image = make_commands(), image_commands()
    assert any(cmd[-3:] == ["-m", "venv", venv] for cmd in make)
    assert any(cmd[-3:] == ["-m", "venv", venv] for cmd in image), f"the image has no `-m venv {venv}`"
    make_pips, image_pips = pip_installs(make), pip_installs(image)
    upgrade = ["--quiet", "--upgrade", "pip"]
    assert upgrade in make_pips and upgrade in image_pips
    make_project = [args for args in make_pips if "-e" in args]
    image_project = [args for args in image_pips if "-e" in args]
    assert len(make_project) == 1 and len(image_project) == 1
    make_flags, make_spec, _ = split_install(make_project[0])
    image_flags, image_spec, _ = split_install(image_project[0])
    assert image_flags == make_flags
    # The same project: make adds the test extras, the image none.
    assert re.fullmatch(r"\.\[test\]", make_spec), make_spec
    assert image_spec == "."
    assert only("WORKDIR").text + "/" + venv + "/bin" in image_env()["PATH"].split(":")


def test_the_image_installs_the_default_python_whitelist_as_make_does() -> None:
    """What the default PYTHON_PACKAGES_WHITELIST_IMPORT names is installed in the image (so each package
    works at default settings, README), and make installs the same distributions (the test extras)."""
    image_project = [args for args in pip_installs(image_commands()) if "-e" in args][0]
    extra = {name.lower() for name in split_install(image_project)[2]}
    providers = packages_distributions()
    wanted = {dist.lower() for module in PYTHON_PACKAGES for dist in providers.get(module, [])}
    assert len(wanted) >= len(PYTHON_PACKAGES), f"some whitelisted module is not installed here: {wanted}"
    assert extra == wanted
    # make installs the test extras, and with them what they require (urllib3 comes with requests).
    test_extras = [Requirement(r).name for r in PYPROJECT["project"]["optional-dependencies"]["test"]]
    in_make = {name.lower() for name in test_extras}
    for name in test_extras:
        in_make |= {Requirement(r).name.lower() for r in requires(name) or [] if "extra ==" not in r}
    assert extra <= in_make, f"not installed by make: {extra - in_make}"


def test_the_image_python_runs_subinterpreters_and_satisfies_the_project() -> None:
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-\w+", only("FROM").text)
    assert match, f"expected a pinned python:X.Y.Z-slim-<debian> image, not {only('FROM').text}"
    version = tuple(int(part) for part in match.groups())
    assert version[:2] >= SUBINTERPRETERS, "the kernels would get no GIL per workspace"
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(".".join(map(str, version)))
    # make's own floor is the project's.
    floor = re.search(r"sys\.version_info < \((\d+), (\d+)\)", MAKEFILE.read_text())
    assert floor and f">={floor[1]}.{floor[2]}" == PYPROJECT["project"]["requires-python"]


def test_the_image_node_is_the_one_the_runtime_and_the_docs_demand() -> None:
    pinned = image_args()["NODEJS_VERSION"]
    assert int(pinned.split(".")[0]) >= MIN_NODE_MAJOR
    checks = [cmd for cmd in image_commands() if cmd[:2] == ["node", "-e"]]
    assert checks and f">= {MIN_NODE_MAJOR} ?" in checks[0][2], "the build checks another Node.js major"
    assert f"Node.js >= {MIN_NODE_MAJOR}" in MAKEFILE.read_text()
    assert f"Node.js ≥ {MIN_NODE_MAJOR}" in (ROOT / "README.md").read_text()


def test_the_image_serves_with_the_settings_defaults_on_every_address() -> None:
    env, defaults = image_env(), Settings()
    assert exec_form(only("CMD")) == ["functions", "serve"]
    assert "functions" in PYPROJECT["project"]["scripts"]
    assert env["HOST"] == "0.0.0.0"
    assert int(only("EXPOSE").text) == int(env["PORT"]) == defaults.port
    healthcheck = only("HEALTHCHECK").text
    assert "/sys/healthcheck" in healthcheck and "os.environ.get('PORT', '4000')" in healthcheck
    assert str(defaults.port) in healthcheck
    settings = load_settings({k: v for k, v in env.items() if k != "PATH"}, tty=False)
    assert settings.host == "0.0.0.0" and settings.port == defaults.port


def test_the_storage_is_a_volume_owned_by_the_unprivileged_user() -> None:
    env = image_env()
    volumes = exec_form(only("VOLUME"))
    storage = PurePosixPath(env["FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH"])
    assert any(storage.is_relative_to(volume) for volume in volumes)
    user = only("USER").text.split(":")[0]
    assert user not in ("root", "0")
    uid = re.search(rf"useradd .*--uid (\d+) .*{user}", CONTAINERFILE.read_text())
    assert uid, "the image's user is not made by useradd with a fixed uid"
    pod = objects()[("Deployment", "functions")]["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsUser"] == int(uid[1]) and pod["runAsNonRoot"] is True


def test_the_image_holds_every_package_and_the_hosts_scripts() -> None:
    copied = {
        i.text.split()[-1].strip("/")
        for i in instructions()
        if i.keyword == "COPY" and i.text.split()[-1].endswith("/")
    }
    packages = {name.rstrip("*") for name in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"runtimes"} <= copied, f"not copied: {packages | {'runtimes'} - copied}"


def test_the_deployment_runs_the_image_command_on_the_image_port() -> None:
    spec = container()
    assert "command" not in spec and "args" not in spec, "the image's `functions serve` is overridden"
    assert [p["containerPort"] for p in spec["ports"]] == [int(image_env()["PORT"])]
