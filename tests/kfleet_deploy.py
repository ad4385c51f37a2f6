"""Reading kfleet's systemd units and their settings files the way
systemd does, for the tests of deploy/ (test_deploy_manifests reads the
sources, test_packages the installed copies)."""
import re
import shlex


def unit_values(path):
    """{key: [values]} of a unit file, all sections together."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", "[")):
                k, _, v = line.partition("=")
                out.setdefault(k, []).append(v)
    return out


def env_file(path):
    """{KEY: value} of an EnvironmentFile (KEY=VALUE lines, values
    optionally double-quoted; # comments)."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                k, _, v = line.partition("=")
                out[k] = shlex.split(v)[0] if v else ""
    return out


def expand(command, env):
    """A unit's command line as argv with env put in as systemd does:
    ${X} is exactly one argument, $X is split on white space (none if
    empty). Other uses of $ are refused (the units do not need them)."""
    argv = []
    for word in shlex.split(command):
        m = re.fullmatch(r"\$\{(\w+)\}|\$(\w+)", word)
        if m and m.group(1):
            argv.append(env[m.group(1)])
        elif m:
            argv += env[m.group(2)].split()
        else:
            assert "$" not in word, f"cannot expand {word!r} in {command!r}"
            argv.append(word)
    return argv
