// Command render renders a Helm chart the way `helm template` does, for the functions the
// etcd-snapshot-operator chart uses. Helm is not packaged on Debian; its engine is Go's
// text/template plus the sprig function library, which Debian packages
// (golang-github-masterminds-sprig-dev), so this builds offline in GOPATH mode:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o render ./tools/render
//
// Usage (same meaning as the helm flags):
//
//	render [--namespace NS] [--include-crds] [-f values.yaml]... RELEASE CHART_DIR
//
// What matches Helm 3: values.yaml coalesced with the -f files (maps merge, null deletes a key),
// numbers in values are float64 (values go through JSON as in Helm), .Release, .Chart, .Values,
// .Capabilities (minimal), .Template, the functions sprig's TxtFuncMap minus env/expandenv plus
// include, tpl, required, toYaml, fromYaml, toJson, fromJson, lookup (always empty, as
// `helm template`), templates named <chart>/templates/<file>, files starting with `_` not
// rendered, "<no value>" removed, every document split on `---` and sorted in Helm's install
// order of kinds, each printed as "---\n# Source: <chart>/templates/<file>\n<doc>\n", CRDs from
// crds/ first with --include-crds, and `fail`/`required` reported as
// "Error: execution error at (<file>:<line>:<col>): <message>" on stderr with exit status 1.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	yaml "gopkg.in/yaml.v2"
)

// chartMeta is the part of Chart.yaml templates read, with Helm's field names.
type chartMeta struct {
	APIVersion  string `yaml:"apiVersion"`
	Name        string `yaml:"name"`
	Version     string `yaml:"version"`
	AppVersion  string `yaml:"appVersion"`
	Description string `yaml:"description"`
	Type        string `yaml:"type"`
	KubeVersion string `yaml:"kubeVersion"`
}

type release struct {
	Name      string
	Namespace string
	Service   string
	IsInstall bool
	IsUpgrade bool
	Revision  int
}

type kubeVersion struct {
	Version    string
	Major      string
	Minor      string
	GitVersion string
}

func (k kubeVersion) String() string { return k.Version }

type versionSet []string

// Has reports whether an apiVersion (group/version) or group/version/Kind is known.
func (v versionSet) Has(s string) bool {
	for _, x := range v {
		if x == s {
			return true
		}
	}
	return false
}

type capabilities struct {
	KubeVersion kubeVersion
	APIVersions versionSet
}

// Helm's default Capabilities for `helm template` (no cluster): the built-in API versions.
var defaultCapabilities = capabilities{
	KubeVersion: kubeVersion{Version: "v1.20.0", Major: "1", Minor: "20", GitVersion: "v1.20.0"},
	APIVersions: versionSet{"v1", "apps/v1", "batch/v1", "policy/v1", "rbac.authorization.k8s.io/v1",
		"coordination.k8s.io/v1", "events.k8s.io/v1", "apiextensions.k8s.io/v1",
		"networking.k8s.io/v1", "storage.k8s.io/v1", "scheduling.k8s.io/v1"},
}

type valueFiles []string

func (v *valueFiles) String() string     { return strings.Join(*v, ",") }
func (v *valueFiles) Set(s string) error { *v = append(*v, s); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	var files valueFiles
	namespace := flag.String("namespace", "default", "namespace of the release (.Release.Namespace)")
	flag.StringVar(namespace, "n", "default", "shorthand for --namespace")
	includeCRDs := flag.Bool("include-crds", false, "print the chart's crds/ before the templates")
	flag.Var(&files, "f", "values file (repeatable; later files win)")
	flag.Var(&files, "values", "same as -f")
	flag.Parse()
	if flag.NArg() != 2 {
		return errors.New("usage: render [--namespace NS] [--include-crds] [-f values.yaml]... RELEASE CHART_DIR")
	}
	releaseName, chartDir := flag.Arg(0), flag.Arg(1)

	raw, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return err
	}
	var meta chartMeta
	if err := yaml.Unmarshal(raw, &meta); err != nil {
		return fmt.Errorf("Chart.yaml: %w", err)
	}
	if meta.Name == "" {
		return errors.New("Chart.yaml: name is required")
	}

	values, err := readValues(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return err
	}
	for _, f := range files {
		override, err := readValues(f)
		if err != nil {
			return err
		}
		values = coalesce(override, values)
	}

	var out bytes.Buffer
	if *includeCRDs {
		crds, _ := filepath.Glob(filepath.Join(chartDir, "crds", "*"))
		sort.Strings(crds)
		for _, c := range crds {
			if ext := filepath.Ext(c); ext != ".yaml" && ext != ".yml" && ext != ".json" {
				continue
			}
			data, err := os.ReadFile(c)
			if err != nil {
				return err
			}
			fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", path.Join(meta.Name, "crds", filepath.Base(c)), data)
		}
	}

	rendered, err := render(chartDir, meta, release{
		Name: releaseName, Namespace: *namespace, Service: "Helm", IsInstall: true, Revision: 1,
	}, values)
	if err != nil {
		return err
	}
	for _, m := range sortManifests(rendered) {
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", m.name, m.content)
	}
	_, err = os.Stdout.Write(out.Bytes())
	return err
}

// readValues reads a values file as Helm does (YAML to JSON to map[string]interface{}).
func readValues(file string) (map[string]interface{}, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var v interface{}
	if err := yaml.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	j, err := json.Marshal(jsonable(v))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	out := map[string]interface{}{}
	if string(j) == "null" {
		return out, nil
	}
	if err := json.Unmarshal(j, &out); err != nil {
		return nil, fmt.Errorf("%s: not a map of values: %w", file, err)
	}
	return out, nil
}

// jsonable turns yaml.v2's map[interface{}]interface{} into map[string]interface{}.
func jsonable(v interface{}) interface{} {
	switch t := v.(type) {
	case map[interface{}]interface{}:
		m := make(map[string]interface{}, len(t))
		for k, val := range t {
			m[fmt.Sprint(k)] = jsonable(val)
		}
		return m
	case []interface{}:
		for i := range t {
			t[i] = jsonable(t[i])
		}
		return t
	default:
		return v
	}
}

// coalesce merges override onto base as Helm does: maps merge recursively, a null deletes.
func coalesce(override, base map[string]interface{}) map[string]interface{} {
	out := make(map[string]interface{}, len(base))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range override {
		if v == nil {
			delete(out, k)
			continue
		}
		om, ok1 := v.(map[string]interface{})
		bm, ok2 := out[k].(map[string]interface{})
		if ok1 && ok2 {
			out[k] = coalesce(om, bm)
		} else {
			out[k] = v
		}
	}
	return out
}

// toYAML is Helm's toYaml: sigs.k8s.io/yaml (JSON, then yaml.v2), without the final newline.
func toYAML(v interface{}) string {
	j, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	var obj interface{}
	if err := yaml.Unmarshal(j, &obj); err != nil {
		return ""
	}
	data, err := yaml.Marshal(obj)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

func fromYAML(s string) map[string]interface{} {
	var v interface{}
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		return map[string]interface{}{"Error": err.Error()}
	}
	j, _ := json.Marshal(jsonable(v))
	m := map[string]interface{}{}
	if err := json.Unmarshal(j, &m); err != nil {
		return map[string]interface{}{"Error": err.Error()}
	}
	return m
}

func toJSON(v interface{}) string {
	j, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(j)
}

func fromJSON(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func render(chartDir string, meta chartMeta, rel release, values map[string]interface{}) (map[string]string, error) {
	root := filepath.Join(chartDir, "templates")
	var names []string
	sources := map[string]string{}
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(chartDir, p)
		name := path.Join(meta.Name, filepath.ToSlash(rel))
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		names = append(names, name)
		sources[name] = string(data)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(names)

	t := template.New("gotpl").Option("missingkey=zero")
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	funcs["toYaml"] = toYAML
	funcs["fromYaml"] = fromYAML
	funcs["toJson"] = toJSON
	funcs["fromJson"] = fromJSON
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil {
			return v, errors.New(msg)
		}
		if s, ok := v.(string); ok && s == "" {
			return v, errors.New(msg)
		}
		return v, nil
	}
	funcs["fail"] = func(msg string) (string, error) { return "", errors.New(msg) }
	funcs["lookup"] = func(string, string, string, string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	includeDepth := map[string]int{}
	funcs["include"] = func(name string, data interface{}) (string, error) {
		if includeDepth[name] > 1000 {
			return "", fmt.Errorf("rendering template has a nested reference name: %s", name)
		}
		includeDepth[name]++
		defer func() { includeDepth[name]-- }()
		var b strings.Builder
		if err := t.ExecuteTemplate(&b, name, data); err != nil {
			return "", err
		}
		return b.String(), nil
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		c, err := t.Clone()
		if err != nil {
			return "", err
		}
		c, err = c.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var b strings.Builder
		if err := c.Execute(&b, data); err != nil {
			return "", err
		}
		return strings.ReplaceAll(b.String(), "<no value>", ""), nil
	}
	t.Funcs(funcs)
	for _, n := range names {
		if _, err := t.New(n).Parse(sources[n]); err != nil {
			return nil, cleanError(err)
		}
	}

	// Helm executes templates deepest path first, then in reverse alphabetical order (its
	// sortTemplates), which decides which `fail` is reported when several would fail.
	order := append([]string(nil), names...)
	sort.SliceStable(order, func(i, j int) bool {
		di, dj := strings.Count(order[i], "/"), strings.Count(order[j], "/")
		if di != dj {
			return di > dj
		}
		return order[i] > order[j]
	})
	out := map[string]string{}
	for _, n := range order {
		if strings.HasPrefix(path.Base(n), "_") || strings.HasSuffix(n, "NOTES.txt") {
			continue
		}
		vals := map[string]interface{}{
			"Values":       values,
			"Release":      rel,
			"Chart":        meta,
			"Capabilities": defaultCapabilities,
			"Template":     map[string]interface{}{"Name": n, "BasePath": path.Join(meta.Name, "templates")},
			"Files":        map[string]interface{}{},
		}
		var b strings.Builder
		if err := t.ExecuteTemplate(&b, n, vals); err != nil {
			return nil, cleanError(err)
		}
		out[n] = strings.ReplaceAll(b.String(), "<no value>", "")
	}
	return out, nil
}

// cleanError reports a `fail` or `required` as Helm does: "execution error at
// (<file>:<line>:<col>): <message>", the innermost template position and the message alone.
var posErr = regexp.MustCompile(`template: ([^:\s]+:\d+:\d+)`)

func cleanError(err error) error {
	msg := err.Error()
	cut := -1
	for _, marker := range []string{"error calling fail: ", "error calling required: "} {
		if i := strings.LastIndex(msg, marker); i >= 0 && i+len(marker) > cut {
			cut = i + len(marker)
		}
	}
	if cut < 0 {
		return err
	}
	where := ""
	if p := posErr.FindAllStringSubmatch(msg[:cut], -1); len(p) > 0 {
		where = p[len(p)-1][1]
	}
	return fmt.Errorf("execution error at (%s): %s", where, msg[cut:])
}

type manifest struct {
	name, content, kind string
}

// Helm's releaseutil.InstallOrder.
var installOrder = []string{"PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota",
	"LimitRange", "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret",
	"SecretList", "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
	"CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
	"ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
	"DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
	"HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
	"APIService"}

var sep = regexp.MustCompile("(?:^|\\s*\n)---\\s*")

// sortManifests is Helm's SortManifests: files by path, documents in file order, then a stable
// sort by kind in install order (unknown kinds last, alphabetically).
func sortManifests(files map[string]string) []manifest {
	var paths []string
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var ms []manifest
	for _, p := range paths {
		content := files[p]
		if strings.TrimSpace(content) == "" {
			continue
		}
		for _, d := range sep.Split(strings.TrimSpace(content), -1) {
			if d == "" {
				continue
			}
			d = strings.TrimSpace(d)
			var head struct {
				Kind string `yaml:"kind"`
			}
			_ = yaml.Unmarshal([]byte(d), &head)
			ms = append(ms, manifest{name: p, content: d, kind: head.Kind})
		}
	}
	order := map[string]int{}
	for i, k := range installOrder {
		order[k] = i
	}
	sort.SliceStable(ms, func(i, j int) bool {
		a, aok := order[ms[i].kind]
		b, bok := order[ms[j].kind]
		if !aok && !bok {
			if ms[i].kind != ms[j].kind {
				return ms[i].kind < ms[j].kind
			}
			return false
		}
		if !aok {
			return false
		}
		if !bok {
			return true
		}
		return a < b
	})
	return ms
}
