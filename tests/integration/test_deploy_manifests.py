"""The deployment files agree with the binaries and with each other:
every Kubernetes manifest in deploy/kubernetes parses (python3-yaml), has
the kinds and shapes kfleet needs, and its commands, flags, ports,
volumes and etcd addresses are consistent with the daemons' --help, with
the systemd units' installed paths and across the manifests; every
systemd unit's command line uses only variables its settings file
defines and flags the binary knows. No cluster is needed: this reads
files and runs `--help`."""
import os
import re
import shlex
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kfleet_harness as h  # noqa: E402
from kfleet_deploy import env_file, unit_values  # noqa: E402

yaml = pytest.importorskip("yaml")

DEPLOY = os.path.join(h.ROOT, "deploy")
K8S = os.path.join(DEPLOY, "kubernetes")
NAMESPACE = "kfleet"
ETCD_BIN = "/usr/bin/etcd"


# ---- helpers ----------------------------------------------------------------
def load_docs():
    """{file name: [documents]} for every *.yaml in deploy/kubernetes."""
    out = {}
    for name in sorted(os.listdir(K8S)):
        if name.endswith(".yaml"):
            with open(os.path.join(K8S, name)) as f:
                out[name] = [d for d in yaml.safe_load_all(f) if d is not None]
    return out


def objects():
    """Every Kubernetes object of the manifests (not the kustomization)."""
    return [d for name, docs in load_docs().items() if name != "kustomization.yaml" for d in docs]


def one(kind, name):
    found = [o for o in objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def container(workload):
    cs = workload["spec"]["template"]["spec"]["containers"]
    assert len(cs) == 1, f"{workload['metadata']['name']}: expected one container"
    return cs[0]


def flags(args):
    """[--flag=value, ...] -> {flag: value}; every arg must have that form."""
    out = {}
    for a in args:
        m = re.fullmatch(r"--([a-z][a-z0-9-]*)=(.*)", a)
        assert m, f"argument {a!r} is not --flag=value"
        assert m.group(1) not in out, f"--{m.group(1)} given twice"
        out[m.group(1)] = m.group(2)
    return out


_help_cache = {}


def known_flags(binary):
    """The --flags a binary's --help names."""
    if binary not in _help_cache:
        r = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60)
        text = r.stdout + r.stderr
        found = set(re.findall(r"--([a-z][a-z0-9-]*)", text))
        assert len(found) > 5, f"{binary} --help named too few flags:\n{text}"
        _help_cache[binary] = found
    return _help_cache[binary]


def build_binary(installed_path):
    """The build tree's binary for an installed path (etcd: Debian's)."""
    name = os.path.basename(installed_path)
    if name == "etcd":
        if not os.access(ETCD_BIN, os.X_OK):
            pytest.skip("etcd is not installed")
        return ETCD_BIN
    if name == "kfleet-scheduler":
        return h.Scheduler.binary()
    return h.binary(name)


def port_of(hostport):
    m = re.fullmatch(r".*:(\d+)", hostport)
    assert m, f"{hostport!r} has no port"
    return int(m.group(1))


def container_ports(c):
    return {p["name"]: p["containerPort"] for p in c.get("ports", [])}


def mount_for(workload, path):
    """The volume mount of the workload's container that holds path."""
    c = container(workload)
    best = None
    for m in c.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best["mountPath"]):
                best = m
    assert best, f"{workload['metadata']['name']}: nothing is mounted at {path}"
    return best


def volume(workload, name):
    spec = workload["spec"]["template"]["spec"]
    for v in spec.get("volumes", []):
        if v["name"] == name:
            return v
    for t in workload["spec"].get("volumeClaimTemplates", []):
        if t["metadata"]["name"] == name:
            return {"name": name, "persistentVolumeClaim": t}
    raise AssertionError(f"{workload['metadata']['name']}: no volume {name}")


def unit(name):
    """{key: [values]} of a unit file in deploy/systemd."""
    return unit_values(os.path.join(DEPLOY, "systemd", name))


def etcd_members(wl, svc):
    """The client URLs of every etcd member, from the StatefulSet and its Service."""
    port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "client")
    return [f"http://{wl['metadata']['name']}-{i}.{svc['metadata']['name']}.{NAMESPACE}.svc:{port}"
            for i in range(wl["spec"]["replicas"])]


# ---- the manifests -------------------------------------------------------------
def test_every_document_parses_and_is_named():
    docs = load_docs()
    assert {"namespace.yaml", "etcd.yaml", "scheduler.yaml", "agent.yaml",
            "kustomization.yaml"} <= set(docs)
    for name, ds in docs.items():
        assert ds, f"{name} holds no document"
        for d in ds:
            assert d.get("apiVersion") and d.get("kind"), f"{name}: a document without apiVersion/kind"
            if d["kind"] == "Kustomization":
                continue
            assert d["metadata"].get("name"), f"{name}: a {d['kind']} without a name"
            if d["kind"] != "Namespace":
                assert d["metadata"].get("namespace") == NAMESPACE, \
                    f"{name}: {d['kind']} {d['metadata']['name']} is not in namespace {NAMESPACE}"
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects())
    assert kinds == [("DaemonSet", "kfleet-agent"), ("Deployment", "kfleet-scheduler"),
                     ("Namespace", NAMESPACE), ("Service", "kfleet-etcd"),
                     ("Service", "kfleet-scheduler"), ("StatefulSet", "kfleet-etcd")], kinds


def test_kustomization_lists_every_manifest():
    k = load_docs()["kustomization.yaml"][0]
    others = sorted(n for n in load_docs() if n != "kustomization.yaml")
    assert sorted(k["resources"]) == others


def test_workloads_select_their_pods_and_services_reach_them():
    workloads = [o for o in objects() if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet")]
    for w in workloads:
        labels = w["spec"]["template"]["metadata"]["labels"]
        sel = w["spec"]["selector"]["matchLabels"]
        assert sel.items() <= labels.items(), f"{w['metadata']['name']}: selector {sel} misses {labels}"
    for s in (o for o in objects() if o["kind"] == "Service"):
        targets = [w for w in workloads
                   if s["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(targets) == 1, f"Service {s['metadata']['name']} selects {len(targets)} workloads"
        ports = container_ports(container(targets[0]))
        for p in s["spec"]["ports"]:
            assert p["targetPort"] in ports, f"Service {s['metadata']['name']}: no container port {p['targetPort']}"
            assert ports[p["targetPort"]] == p["port"], f"Service {s['metadata']['name']}: port {p['port']} " \
                f"-> {p['targetPort']} = {ports[p['targetPort']]}"


def test_one_image_for_every_container_tagged_with_the_version():
    with open(os.path.join(h.ROOT, "CMakeLists.txt")) as f:
        version = re.search(r"project\(kfleet VERSION (\S+)", f.read()).group(1)
    images = {container(w)["image"] for w in objects() if "template" in w.get("spec", {})}
    assert images == {f"kfleet:{version}"}, images
    with open(os.path.join(K8S, "Dockerfile")) as f:
        dockerfile = f.read()
    assert f"kfleet:{version}" in dockerfile and "*.deb" in dockerfile


def test_commands_are_the_installed_binaries_with_flags_they_know():
    """Each container runs the binary its systemd unit runs (the packages'
    paths), with only flags the binary's --help names; $(VAR)s come from
    the container's env."""
    unit_bins = {"kfleet-agent": "kfleet-agent.service", "kfleet-scheduler": "kfleet-scheduler.service",
                 "etcd": "kfleet-etcd.service"}
    for w in objects():
        if "template" not in w.get("spec", {}):
            continue
        c = container(w)
        assert len(c["command"]) == 1, f"{w['metadata']['name']}: flags belong in args"
        cmd = c["command"][0]
        exec_start = unit(unit_bins[os.path.basename(cmd)])["ExecStart"][0].split()[0]
        assert cmd == exec_start, f"{w['metadata']['name']} runs {cmd}, its unit {exec_start}"
        known = known_flags(build_binary(cmd))
        given = flags(c["args"])
        unknown = set(given) - known
        assert not unknown, f"{w['metadata']['name']}: {cmd} has no flag(s) {sorted(unknown)}"
        env = {e["name"] for e in c.get("env", [])}
        for a in c["args"]:
            for var in re.findall(r"\$\((\w+)\)", a):
                assert var in env, f"{w['metadata']['name']}: {a} uses $({var}), not in env"
        for probe in ("readinessProbe", "livenessProbe"):
            p = c[probe]
            port = (p.get("tcpSocket") or p.get("httpGet"))["port"]
            assert port in container_ports(c), f"{w['metadata']['name']}: {probe} on unknown port {port}"


def test_etcd_members_ports_and_data():
    sts, svc = one("StatefulSet", "kfleet-etcd"), one("Service", "kfleet-etcd")
    assert svc["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == svc["metadata"]["name"]
    n = sts["spec"]["replicas"]
    assert n % 2 == 1 and n >= 3, "etcd wants an odd number of members, at least 3"
    c = container(sts)
    f, ports = flags(c["args"]), container_ports(c)
    assert port_of(f["listen-client-urls"]) == ports["client"]
    assert port_of(f["listen-peer-urls"]) == ports["peer"]
    assert f["name"] == "$(POD_NAME)"
    peers = dict(m.split("=", 1) for m in f["initial-cluster"].split(","))
    peer_port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "peer")
    assert peers == {f"kfleet-etcd-{i}": f"http://kfleet-etcd-{i}.kfleet-etcd.{NAMESPACE}.svc:{peer_port}"
                     for i in range(n)}
    assert f["advertise-client-urls"] == \
        f"http://$(POD_NAME).kfleet-etcd.{NAMESPACE}.svc:{port_of(f['advertise-client-urls'])}"
    assert port_of(f["advertise-client-urls"]) == ports["client"]
    m = mount_for(sts, f["data-dir"])
    assert "persistentVolumeClaim" in volume(sts, m["name"]), "etcd's data must be on a persistent volume"


def test_scheduler_deployment():
    dep = one("Deployment", "kfleet-scheduler")
    assert dep["spec"]["replicas"] == 2
    c = container(dep)
    f = flags(c["args"])
    assert f["etcd"].split(",") == etcd_members(one("StatefulSet", "kfleet-etcd"), one("Service", "kfleet-etcd"))
    assert port_of(f["listen-tcp"]) == container_ports(c)["grpc"]
    # its root is read-only: the socket's dir must be a volume
    assert "emptyDir" in volume(dep, mount_for(dep, os.path.dirname(f["listen"]))["name"])
    tenants = volume(dep, mount_for(dep, f["tenants"])["name"])
    assert tenants["secret"]["defaultMode"] & 0o007 == 0, "the scheduler refuses a tenants file others may read"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]


def test_agent_daemonset():
    ds = one("DaemonSet", "kfleet-agent")
    spec = ds["spec"]["template"]["spec"]
    c = container(ds)
    f = flags(c["args"])
    assert f["etcd"].split(",") == etcd_members(one("StatefulSet", "kfleet-etcd"), one("Service", "kfleet-etcd"))
    port = container_ports(c)["agent"]
    assert port_of(f["listen-tcp"]) == port and f["advertise"] == f"$(POD_IP):{port}"
    assert f["node-name"] == "$(NODE_NAME)"
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
    assert env == {"POD_IP": "status.podIP", "NODE_NAME": "spec.nodeName"}
    # the privileges README.md explains
    assert spec["hostPID"] is True
    assert c["securityContext"]["privileged"] is True
    assert c["securityContext"]["seccompProfile"]["type"] == "Unconfined"
    state = mount_for(ds, f["state-dir"])
    assert state["mountPath"] == f["state-dir"] and state["mountPropagation"] == "Bidirectional"
    assert volume(ds, state["name"])["hostPath"]["path"] == f["state-dir"]
    assert volume(ds, mount_for(ds, "/dev/loop-control")["name"])["hostPath"]["path"] == "/dev"
    assert "hostPath" in volume(ds, mount_for(ds, os.path.dirname(f["listen"]))["name"])
    assert "limits" not in c["resources"], "a pod limit would cap every session together (README.md)"


def test_kubernetes_readme_explains_the_agent_privileges():
    with open(os.path.join(K8S, "README.md")) as f:
        text = f.read()
    for what in ("privileged: true", "hostPID: true", "seccomp", "AppArmor", "/dev", "cgroup",
                 "/var/lib/kfleet", "mountPropagation", "CAP_SYS_ADMIN"):
        assert what in text, f"deploy/kubernetes/README.md does not mention {what}"


# ---- systemd units and their settings -----------------------------------------------
@pytest.mark.parametrize("role", ["agent", "scheduler", "etcd"])
def test_unit_uses_its_settings_and_known_flags(role):
    u = unit(f"kfleet-{role}.service")
    assert u["EnvironmentFile"] == [f"/etc/kfleet/{role}.env"]
    env = env_file(os.path.join(DEPLOY, "config", f"{role}.env"))
    exec_start = u["ExecStart"][0].split()
    binary = build_binary(exec_start[0])
    used = set(re.findall(r"\$\{?(\w+)\}?", u["ExecStart"][0]))
    assert used <= set(env), f"kfleet-{role}.service uses {sorted(used - set(env))}, not in {role}.env"
    known = known_flags(binary)
    if role == "etcd":
        # etcd reads ETCD_<FLAG> as --<flag>
        for k in env:
            assert k.startswith("ETCD_") and k[5:].lower().replace("_", "-") in known, f"etcd has no flag for {k}"
        return
    words = [w for w in exec_start[1:] if not w.startswith("$")]
    for v in env.values():
        words += shlex.split(v)
    unknown = {w[2:].split("=")[0] for w in words if w.startswith("--")} - known
    assert not unknown, f"kfleet-{role}: unknown flags {sorted(unknown)}"
    assert u.get("Type") == ["simple"] and u.get("RuntimeDirectory") == ["kfleet"]
    assert u.get("RuntimeDirectoryPreserve") == ["yes"], "both daemons share /run/kfleet"
    if role == "agent":
        assert u["Delegate"] == ["yes"] and u["KillMode"] == ["process"]
