"""The chart's tests, run by `cargo xtask chart` (and so by `cargo xtask test`).

The real Helm engine (Helm 4, embedded by the PyPI package helm-python-sdk as
a native library; no helm binary, no network) lints and renders
charts/trellis for the default values and a matrix of settings. Every
rendered object is then validated: built-in kinds against the Kubernetes
OpenAPI schemas of v1.31 and v1.36 that PyPI kubernetes-validate ships,
custom kinds against the openAPIV3Schema of their CRD. On top: consistency
with trellis_api::contract (ports, env names, keys), least-privilege RBAC,
probes and PDBs, the values schema rejecting bad values, the CRD copies
being current, and the Dockerfile's targets matching the chart's images.

Usage: chart_test.py <repository root>. Prints one line per check and ends
with "N passed, M failed"; exits non-zero on any failure.
"""

import base64
import copy
import pathlib
import re
import sys
import traceback

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
CHART = ROOT / "charts" / "trellis"
FIXTURES = ROOT / "charts" / "tests" / "fixtures"
NAMESPACE = "trellis"
KUBE_VERSIONS = ["1.31.0", "1.36.0"]
# Kinds the chart defines through its CRDs (validated against those schemas).
CUSTOM_GROUPS = ("gateway.networking.k8s.io", "gateway.networking.x-k8s.io", "policy.trellis.io")


def contract():
    """Constants of api/src/contract.rs: {"port::PROXY_ADMIN": 15190, "env::LOG": "TRELLIS_LOG", ...}."""
    text = (ROOT / "api" / "src" / "contract.rs").read_text()
    out = {}
    module = ""
    for line in text.splitlines():
        m = re.match(r"\s*pub mod (\w+)", line)
        if m:
            module = m.group(1) + "::"
            continue
        if re.match(r"^}", line):
            module = ""
        m = re.match(r'\s*pub const (\w+): &str = "([^"]*)";', line)
        if m:
            out[module + m.group(1)] = m.group(2)
        m = re.match(r"\s*pub const (\w+): (?:u16|u32|i32) = (\d+);", line)
        if m:
            out[module + m.group(1)] = int(m.group(2))
    return out


C = contract()

MATRIX = {
    "default": {},
    "cni-off": {"cni": {"enabled": False}},
    "experimental-crds": {"gatewayAPI": {"channel": "experimental"}},
    "no-gateway-api-crds": {"gatewayAPI": {"installCRDs": False}},
    "custom-trust-anchor": {
        "identity": {
            "trustAnchor": {
                "crtPEM": (FIXTURES / "anchor.crt").read_text(),
                "keyPEM": (FIXTURES / "anchor.key").read_text(),
            }
        }
    },
    "existing-trust-anchor-secret": {"identity": {"trustAnchor": {"existingSecret": "corp-mesh-ca"}}},
    "custom-trust-domain": {"trustDomain": "mesh.example.com", "clusterDomain": "k8s.example"},
    "controller-plaintext": {"controller": {"mtls": False}},
    "ignore-failures-custom-images": {
        "injector": {"failurePolicy": "Ignore", "timeoutSeconds": 5},
        "image": {"registry": "registry.example/mesh", "tag": "1.2.3", "pullPolicy": "Always"},
    },
}

BAD_VALUES = {
    "unknown failurePolicy": {"injector": {"failurePolicy": "Sometimes"}},
    "unknown channel": {"gatewayAPI": {"channel": "beta"}},
    "zero replicas": {"controller": {"replicas": 0}},
    "certificate without key": {"identity": {"trustAnchor": {"crtPEM": "-----BEGIN CERTIFICATE-----\n"}}},
    "key and existing secret": {
        "identity": {"trustAnchor": {"crtPEM": "-----BEGIN CERTIFICATE-----\n", "keyPEM": "-----BEGIN EC PRIVATE KEY-----\n", "existingSecret": "x"}}
    },
    "misspelt key": {"injector": {"failurePolicyy": "Fail"}},
    "relative cni dir": {"cni": {"binDir": "opt/cni/bin"}},
    "timeout over 30s": {"injector": {"timeoutSeconds": 31}},
    "mtls as a string": {"controller": {"mtls": "yes"}},
}


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, fn, *args):
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the run
            self.failed += 1
            print(f"FAIL {name}: {e}")
            if not isinstance(e, AssertionError):
                traceback.print_exc()
        else:
            self.passed += 1
            print(f"ok   {name}")


def merge(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def render(values):
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        manifests = chart.render(values, name="trellis", namespace=NAMESPACE, is_install=True)
        effective = chart.merge_values(values)
    objects = []
    for path, text in sorted(manifests.items()):
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["__source"] = path
                objects.append(doc)
    return objects, effective


def clean(obj):
    return {k: v for k, v in obj.items() if k != "__source"}


def ident(o):
    return f'{o["kind"]} {o["metadata"].get("namespace", "")}/{o["metadata"]["name"]}'


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def one(objects, kind, name):
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def crd_schemas(objects):
    """(group, version, kind) -> openAPIV3Schema, from rendered CRDs, else the chart's files."""
    crds = by_kind(objects, "CustomResourceDefinition")
    files = list((CHART / "files").rglob("*.yaml"))
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                crds.append(doc)
    out = {}
    for crd in crds:
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            out.setdefault((group, v["name"], kind), v["schema"]["openAPIV3Schema"])
    return out


def validate_objects(objects):
    schemas = crd_schemas(objects)
    problems = []
    for o in objects:
        group, _, version = o["apiVersion"].rpartition("/")
        if group in CUSTOM_GROUPS:
            schema = schemas.get((group, version, o["kind"]))
            if schema is None:
                problems.append(f"{ident(o)}: no CRD schema for {o['apiVersion']}")
                continue
            errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(clean(o)), key=str)
            problems += [f"{ident(o)}: {e.message} at {list(e.absolute_path)}" for e in errors]
            continue
        for kv in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(clean(o), kv, strict=True)
            except kubernetes_validate.ValidationError as e:
                problems.append(f"{ident(o)} (v{kv}): {e.message} at {list(e.path)}")
    assert not problems, "\n  ".join([f"{len(problems)} invalid objects:"] + problems[:20])


def check_identity_and_namespaces(objects):
    seen = set()
    for o in objects:
        key = (o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
        assert key not in seen, f"duplicate {ident(o)}"
        seen.add(key)
        group = o["apiVersion"].rpartition("/")[0]
        namespaced = o["kind"] not in {
            "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration",
            "CustomResourceDefinition", "GatewayClass", "XMesh",
        }
        if namespaced:
            assert o["metadata"].get("namespace") == NAMESPACE, f"{ident(o)} is not in the release namespace"
        if group not in ("apiextensions.k8s.io",):
            labels = o["metadata"].get("labels", {})
            if o["kind"] != "CustomResourceDefinition":
                assert labels.get("app.kubernetes.io/part-of") == "trellis", f"{ident(o)} lacks part-of"


def workloads(objects):
    return by_kind(objects, "Deployment") + by_kind(objects, "DaemonSet")


def containers(w):
    spec = w["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def check_workloads(objects, values):
    pdbs = by_kind(objects, "PodDisruptionBudget")
    for w in workloads(objects):
        labels = w["spec"]["template"]["metadata"]["labels"]
        for c in containers(w):
            name = f"{ident(w)} container {c['name']}"
            assert "readinessProbe" in c, f"{name} has no readiness probe"
            assert c.get("resources", {}).get("requests"), f"{name} has no resource requests"
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, f"{name} may escalate privileges"
            assert sc.get("readOnlyRootFilesystem") is True, f"{name} has a writable root filesystem"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{name} keeps capabilities"
            assert not sc.get("capabilities", {}).get("add"), f"{name} adds capabilities"
            image = c["image"]
            registry = values["image"]["registry"]
            tag = values["image"]["tag"] or yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
            names = set(values["images"].values())
            repo, _, t = image.rpartition(":")
            assert t == tag and repo.rpartition("/")[0] == registry and repo.rpartition("/")[2] in names, (
                f"{name} image {image} does not come from image.* and images.*"
            )
        if w["kind"] == "Deployment":
            assert w["spec"]["replicas"] >= 2, f"{ident(w)} runs a single replica"
            covered = [
                p for p in pdbs
                if all(labels.get(k) == v for k, v in p["spec"]["selector"]["matchLabels"].items())
            ]
            assert covered, f"{ident(w)} has no PodDisruptionBudget"
            affinity = w["spec"]["template"]["spec"].get("affinity", {})
            assert "podAntiAffinity" in affinity, f"{ident(w)} does not spread its replicas"


def check_rbac(objects):
    for r in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
        for rule in r["rules"]:
            for field in ("verbs", "resources", "apiGroups"):
                assert "*" not in rule.get(field, []), f"{ident(r)} grants * in {field}"
            if r["kind"] == "ClusterRole":
                assert "secrets" not in rule["resources"], f"{ident(r)} reads secrets cluster-wide"
            if "secrets" in rule["resources"] and set(rule["verbs"]) - {"create"}:
                assert rule.get("resourceNames"), f"{ident(r)} reaches secrets it does not own"
    bound = {b["roleRef"]["name"] for b in by_kind(objects, "ClusterRoleBinding") + by_kind(objects, "RoleBinding")}
    for r in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
        assert r["metadata"]["name"] in bound, f"{ident(r)} is bound to nothing"
    sas = {s["metadata"]["name"] for s in by_kind(objects, "ServiceAccount")}
    for w in workloads(objects):
        sa = w["spec"]["template"]["spec"]["serviceAccountName"]
        assert sa in sas, f"{ident(w)} uses a missing ServiceAccount {sa}"


def env_names(objects):
    names = set()
    for w in workloads(objects):
        for c in containers(w):
            names |= {e["name"] for e in c.get("env", [])}
    return names


def check_contract(objects, values):
    known = {v for k, v in C.items() if k.startswith("env::")}
    unknown = {n for n in env_names(objects) if n.startswith("TRELLIS_")} - known
    assert not unknown, f"env names not in trellis_api::contract::env: {sorted(unknown)}"

    def port(obj_kind, name, container, port_name):
        w = one(objects, obj_kind, name)
        c = next(c for c in containers(w) if c["name"] == container)
        return next(p["containerPort"] for p in c["ports"] if p["name"] == port_name)

    assert port("Deployment", "trellis-controller", "controller", "grpc") == C["port::CONTROLLER_GRPC"]
    assert port("Deployment", "trellis-controller", "controller", "admin") == C["port::CONTROLLER_ADMIN"]
    assert port("Deployment", "trellis-identity", "identity", "grpc") == C["port::IDENTITY_GRPC"]
    assert port("Deployment", "trellis-identity", "identity", "admin") == C["port::IDENTITY_ADMIN"]
    assert port("Deployment", "trellis-injector", "injector", "https") == C["port::INJECTOR_WEBHOOK"]
    svc = one(objects, "Service", "trellis-controller")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]}["grpc"] == C["port::CONTROLLER_GRPC"]
    svc = one(objects, "Service", "trellis-identity")
    assert svc["spec"]["ports"][0]["port"] == C["port::IDENTITY_GRPC"]

    cfg = yaml.safe_load(one(objects, "ConfigMap", "trellis-injector")["data"]["injector.yaml"])
    assert cfg["controllerAddr"].endswith(f":{C['port::CONTROLLER_GRPC']}"), cfg["controllerAddr"]
    assert cfg["identityAddr"].endswith(f":{C['port::IDENTITY_GRPC']}"), cfg["identityAddr"]
    assert cfg["cniEnabled"] == values["cni"]["enabled"]
    assert cfg["trustDomain"] == values["trustDomain"]

    hook = one(objects, "MutatingWebhookConfiguration", "trellis-injector")["webhooks"][0]
    assert hook["namespaceSelector"]["matchLabels"] == {C["key::INJECT"]: C["INJECT_ENABLED"]}
    for kind in ("GatewayClass", "XMesh"):
        for o in by_kind(objects, kind):
            assert o["metadata"]["name"] == C["GATEWAY_CLASS_NAME"]
            assert o["spec"]["controllerName"] == C["CONTROLLER_NAME"]


def check_webhook(objects, values):
    mwc = one(objects, "MutatingWebhookConfiguration", "trellis-injector")
    hook = mwc["webhooks"][0]
    assert hook["failurePolicy"] == values["injector"]["failurePolicy"]
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["timeoutSeconds"] == values["injector"]["timeoutSeconds"]
    assert "caBundle" not in hook["clientConfig"], "the injector owns caBundle; the chart must not set it"
    assert hook["clientConfig"]["service"]["path"] == "/inject"
    assert hook["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}]
    excluded = hook["namespaceSelector"]["matchExpressions"][0]["values"]
    assert NAMESPACE in excluded and "kube-system" in excluded


def check_case(case, objects, values):
    crds = {c["spec"]["names"]["kind"]: c for c in by_kind(objects, "CustomResourceDefinition")}
    assert "AuthorizationPolicy" in crds, "the Trellis CRDs are missing"
    if values["gatewayAPI"]["installCRDs"]:
        channel = crds["HTTPRoute"]["metadata"]["annotations"]["gateway.networking.k8s.io/channel"]
        assert channel == values["gatewayAPI"]["channel"], f"HTTPRoute CRD from channel {channel}"
        assert "XMesh" in crds and "XBackendTrafficPolicy" in crds
    else:
        assert not [k for k, c in crds.items() if c["spec"]["group"].startswith("gateway.networking")]
    daemonsets = by_kind(objects, "DaemonSet")
    if values["cni"]["enabled"]:
        ds = one(objects, "DaemonSet", "trellis-cni")
        args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[0] == "install" and f"--host-conf-dir={values['cni']['confDir']}" in args
    else:
        assert not daemonsets, "a CNI DaemonSet without cni.enabled"
    identity = one(objects, "Deployment", "trellis-identity")
    args = identity["spec"]["template"]["spec"]["containers"][0]["args"]
    anchor = values["identity"]["trustAnchor"]
    secrets = {s["metadata"]["name"]: s for s in by_kind(objects, "Secret")}
    if anchor["crtPEM"]:
        data = secrets["trellis-identity-ca"]["data"]
        assert base64.b64decode(data["ca.crt"]).decode() == anchor["crtPEM"]
        assert base64.b64decode(data["ca.key"]).decode() == anchor["keyPEM"]
        assert secrets["trellis-identity-ca"]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    else:
        assert "trellis-identity-ca" not in secrets
    secret = anchor["existingSecret"] or "trellis-identity-ca"
    assert f"--ca-secret={NAMESPACE}/{secret}" in args, args
    # Injected pods mount the bundle ConfigMap of their own namespace.
    assert f"--bundle-namespaces={values['identity']['bundleNamespaces']}" in args, args


def injector_token_seconds():
    """The token expiry the injector gives sidecars (TOKEN_SECONDS in injector/src/patch.rs)."""
    text = (ROOT / "injector" / "src" / "patch.rs").read_text()
    m = re.search(r"const TOKEN_SECONDS: i64 = (\d+);", text)
    assert m, "injector/src/patch.rs no longer declares TOKEN_SECONDS"
    return int(m.group(1))


def env_map(container):
    return {e["name"]: e for e in container.get("env", [])}


def mounted_file(pod, container, path, source_kind):
    """The projected-volume source (of `source_kind`) behind the file `path` of
    `container`, or an assertion naming what does not line up."""
    mounts = [m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(mounts) == 1, f"{path} is under {len(mounts)} mounts of {container['name']}"
    mount = mounts[0]
    rel = path[len(mount["mountPath"].rstrip("/")) + 1:]
    volume = next((v for v in pod.get("volumes", []) if v["name"] == mount["name"]), None)
    assert volume, f"mount {mount['name']} names no volume"
    for source in volume.get("projected", {}).get("sources", []):
        s = source.get(source_kind)
        if s is None:
            continue
        files = [s["path"]] if "path" in s else [i["path"] for i in s.get("items", [])]
        if rel in files:
            return s
    raise AssertionError(f"no {source_kind} of volume {volume['name']} provides {rel}")


def check_controller_mtls(objects, values):
    """The controller gets a sidecar's identity when controller.mtls is on, and
    proxies get its SPIFFE id; off, none of it is rendered."""
    controller = one(objects, "Deployment", "trellis-controller")
    pod = controller["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "controller")
    env = env_map(container)
    cfg = yaml.safe_load(one(objects, "ConfigMap", "trellis-injector")["data"]["injector.yaml"])
    grpc = next(p for p in one(objects, "Service", "trellis-controller")["spec"]["ports"] if p["name"] == "grpc")
    identity_env = [C[f"env::{n}"] for n in ("IDENTITY_ADDR", "IDENTITY_NAME", "IDENTITY_TOKEN", "TRUST_BUNDLE", "SERVICE_ACCOUNT")]
    if not values["controller"]["mtls"]:
        assert not set(identity_env) & set(env), f"identity env without controller.mtls: {sorted(set(identity_env) & set(env))}"
        assert not pod.get("volumes") and not container.get("volumeMounts"), "identity volume without controller.mtls"
        assert "controllerIdentity" not in cfg, "proxies are told to require mTLS of a plaintext controller"
        assert grpc.get("appProtocol") == "kubernetes.io/h2c", grpc
        return
    # What IdentityConfig::from_env reads, with the values a sidecar gets.
    for name in identity_env:
        assert name in env, f"the controller lacks {name}"
    assert env[C["env::IDENTITY_ADDR"]]["value"] == cfg["identityAddr"]
    assert env[C["env::IDENTITY_NAME"]]["value"] == cfg["identityName"]
    assert env[C["env::TRUST_DOMAIN"]]["value"] == values["trustDomain"]
    field = lambda name: env[name].get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    assert field(C["env::POD_NAMESPACE"]) == "metadata.namespace"
    assert field(C["env::SERVICE_ACCOUNT"]) == "spec.serviceAccountName"
    # The files the env names are the mounted token and bundle.
    token = mounted_file(pod, container, env[C["env::IDENTITY_TOKEN"]]["value"], "serviceAccountToken")
    assert token["audience"] == C["IDENTITY_TOKEN_AUDIENCE"], token
    assert token["expirationSeconds"] == injector_token_seconds(), token
    bundle = mounted_file(pod, container, env[C["env::TRUST_BUNDLE"]]["value"], "configMap")
    assert bundle["name"] == C["TRUST_BUNDLE_CONFIGMAP"], bundle
    assert [i["key"] for i in bundle["items"]] == [C["TRUST_BUNDLE_KEY"]], bundle
    assert all(m.get("readOnly") for m in container["volumeMounts"]), "identity files mounted writable"
    # Identity publishes that ConfigMap in the controller's own namespace,
    # whatever identity.bundleNamespaces selects.
    args = one(objects, "Deployment", "trellis-identity")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--bundle-configmap={NAMESPACE}/{C['TRUST_BUNDLE_CONFIGMAP']}" in args, args
    # Proxies require exactly the id of the controller's service account.
    sa = pod["serviceAccountName"]
    assert one(objects, "ServiceAccount", sa)
    assert cfg["controllerIdentity"] == f"spiffe://{values['trustDomain']}/ns/{NAMESPACE}/sa/{sa}", cfg
    assert "appProtocol" not in grpc, f"the mTLS discovery port is labelled {grpc['appProtocol']}"


def lint(case, values):
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version="v1.31.0")
    bad = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    assert not bad, f"helm lint: {bad}"


def schema_rejects(name, values):
    with helm.Chart.load(str(CHART)) as chart:
        try:
            chart.validate_schema(values)
        except Exception as e:  # noqa: BLE001 - any Helm values error is the expected outcome
            assert "trellis" in str(e), f"an unexpected error: {e}"
            return
    raise AssertionError(f"values.schema.json accepted {name}: {values}")


def strip_descriptions(v):
    if isinstance(v, dict):
        return {k: strip_descriptions(x) for k, x in v.items() if not (k == "description" and isinstance(x, str))}
    if isinstance(v, list):
        return [strip_descriptions(x) for x in v]
    return v


def same_files(src_dir, dst_dir, skip=(), stripped=False):
    """The copies hold what the sources hold (without descriptions when `stripped`)."""
    def load(p, strip):
        docs = [d for d in yaml.safe_load_all(p.read_text()) if d]
        return strip_descriptions(docs) if strip else docs
    src = {p.name: load(p, stripped) for p in sorted(src_dir.glob("*.yaml")) if not any(s in p.name for s in skip)}
    dst = {p.name: load(p, False) for p in sorted(dst_dir.glob("*.yaml"))}
    assert src, f"{src_dir} holds no YAML"
    stale = sorted(n for n in src if dst.get(n) != src[n]) + sorted(n for n in dst if n not in src)
    assert not stale, f"{dst_dir.relative_to(ROOT)} is not current ({', '.join(stale)}): run `cargo xtask chart-sync`"


def check_copies():
    for channel in ("standard", "experimental"):
        same_files(
            ROOT / "third_party" / "gateway-api" / "crds" / channel,
            CHART / "files" / "gateway-api" / channel,
            skip=("vap_safeupgrades",),
            stripped=True,
        )
    same_files(ROOT / "controller" / "crds", CHART / "files" / "trellis-crds")


def check_release_size():
    """Helm keeps a release (chart files, values, manifest) gzipped and base64'd
    in one Secret, which may hold 1 MiB; keep well below it."""
    import gzip, json
    files = {str(p.relative_to(CHART)): base64.b64encode(p.read_bytes()).decode() for p in CHART.rglob("*") if p.is_file()}
    objects, _ = render({"gatewayAPI": {"channel": "experimental"}})
    manifest = yaml.safe_dump_all([clean(o) for o in objects])
    release = json.dumps({"chart": files, "manifest": manifest}).encode()
    size = len(base64.b64encode(gzip.compress(release)))
    assert size < 768 * 1024, f"the release would take {size} bytes of its 1 MiB Secret"


def check_dockerfile():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    targets = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"FROM \S+ AS (\S+)", line)
        if m:
            current = m.group(1)
        m = re.match(r'ENTRYPOINT \["/usr/local/bin/([\w-]+)"\]', line)
        if m and current:
            targets[current] = m.group(1)
    images = yaml.safe_load((CHART / "values.yaml").read_text())["images"]
    missing = sorted(set(images.values()) - set(targets))
    assert not missing, f"docker/Dockerfile has no target for images {missing}"
    built = set(re.findall(r"--bin ([\w-]+)", text))
    for target, binary in targets.items():
        assert binary in built, f"target {target} runs {binary}, which the build stage does not build"
        manifests = list(ROOT.glob("*/Cargo.toml")) + list(ROOT.glob("*/*/Cargo.toml"))
        assert any(f'name = "{binary}"' in m.read_text() for m in manifests), f"no crate builds a binary {binary}"
    proxy = text.split("AS trellis-proxy\n")[1].split("FROM")[0]
    assert f"USER {C['PROXY_UID']}" in proxy, "the proxy image must run as the proxy uid"


def check_deployer_goldens():
    """The gateway deployer's golden objects are valid Kubernetes objects."""
    files = sorted((ROOT / "controller" / "src" / "deployer" / "golden").glob("*.desired.yaml"))
    assert files, "no deployer golden files"
    objects = [o for f in files for o in yaml.safe_load_all(f.read_text()) if o]
    validate_objects(objects)


def main():
    r = Results()
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for case, over in MATRIX.items():
        values = merge(defaults, over)
        r.check(f"{case}: helm lint", lint, case, over)
        try:
            objects, effective = render(over)
        except Exception as e:  # noqa: BLE001
            r.failed += 1
            print(f"FAIL {case}: render: {e}")
            continue
        r.passed += 1
        print(f"ok   {case}: rendered {len(objects)} objects")
        r.check(f"{case}: every object validates", validate_objects, objects)
        r.check(f"{case}: names, namespaces, labels", check_identity_and_namespaces, objects)
        r.check(f"{case}: workloads (probes, resources, security, PDBs)", check_workloads, objects, values)
        r.check(f"{case}: least-privilege RBAC", check_rbac, objects)
        r.check(f"{case}: consistent with trellis_api::contract", check_contract, objects, values)
        r.check(f"{case}: webhook configuration", check_webhook, objects, values)
        r.check(f"{case}: what the values ask for", check_case, case, objects, values)
        r.check(f"{case}: controller mTLS", check_controller_mtls, objects, values)
    for name, values in BAD_VALUES.items():
        r.check(f"schema rejects {name}", schema_rejects, name, values)
    r.check("copied CRDs are current", check_copies)
    r.check("Dockerfile targets match the chart's images", check_dockerfile)
    r.check("gateway deployer objects validate", check_deployer_goldens)
    r.check("the Helm release fits its Secret", check_release_size)
    print(f"chart: {r.passed} passed, {r.failed} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
