// Command controlplane is what `make run` runs: the operator against the
// current kubeconfig, or, when there is none, against a local control plane
// (etcd and kube-apiserver from the envtest binaries) with the CRD installed
// and the sample app applied, so `kubectl get msa` shows it.
//
// The operator runs as a child process built from ./operator/cmd, exactly the
// binary a cluster runs; this program only provides it an API server.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	local := fs.Bool("local", false, "start a local control plane even when a kubeconfig exists")
	dir := fs.String("dir", filepath.Join("bin", "local-controlplane"), "where the local control plane writes its kubeconfig")
	samples := fs.String("samples", filepath.Join("config", "samples"), "manifests applied to the local control plane")
	operatorArgs := fs.String("operator-args", "--health-probe-bind-address=:8081 --metrics-bind-address=:8443", "flags passed to the operator")
	if err := fs.Parse(args); err != nil {
		return err
	}

	if !*local && haveKubeconfig() {
		fmt.Fprintln(stdout, "controlplane: using the current kubeconfig context")
		return runOperator(ctx, os.Environ(), *operatorArgs, stdout)
	}

	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	fmt.Fprintln(stdout, "controlplane: no kubeconfig found; starting etcd and kube-apiserver from", os.Getenv("KUBEBUILDER_ASSETS"))
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("start local control plane: %w", err)
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "controlplane: stop:", err)
		}
	}()

	admin, err := env.AddUser(envtest.User{Name: "courier-admin", Groups: []string{"system:masters"}}, cfg)
	if err != nil {
		return fmt.Errorf("add admin user: %w", err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		return fmt.Errorf("render kubeconfig: %w", err)
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", *dir, err)
	}
	kubeconfigPath, err := filepath.Abs(filepath.Join(*dir, "kubeconfig"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}

	c, err := client.New(admin.Config(), client.Options{})
	if err != nil {
		return fmt.Errorf("create client: %w", err)
	}
	applied, err := applyDir(ctx, c, *samples)
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, `
controlplane: a local API server is up (no kubelet: pods are not scheduled, so apps stay not Ready).
  applied: %v
  try, in another shell:
    export KUBECONFIG=%s
    kubectl get msa
    kubectl get deployments,services -l app.kubernetes.io/managed-by=courier-operator
    kubectl describe msa blog
  Ctrl-C stops the operator and the control plane.

`, applied, kubeconfigPath)

	environ := append(os.Environ(), "KUBECONFIG="+kubeconfigPath)
	return runOperator(ctx, environ, *operatorArgs, stdout)
}

// haveKubeconfig reports whether client-go's default loading rules (KUBECONFIG,
// ~/.kube/config) yield a usable current context.
func haveKubeconfig() bool {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	return err == nil && cfg != nil && cfg.Host != ""
}

// runOperator builds and runs ./operator/cmd until ctx ends.
func runOperator(ctx context.Context, environ []string, args string, stdout io.Writer) error {
	bin, err := filepath.Abs(filepath.Join("bin", "courier-operator"))
	if err != nil {
		return err
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./operator/cmd")
	build.Stdout, build.Stderr = stdout, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build operator: %w", err)
	}
	cmd := exec.Command(bin, strings.Fields(args)...)
	cmd.Env = environ
	cmd.Stdout, cmd.Stderr = stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start operator: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return fmt.Errorf("operator exited: %w", err)
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		err := <-done
		var exitErr *exec.ExitError
		if err != nil && !errors.As(err, &exitErr) {
			return err
		}
		return nil
	}
}

// applyDir creates every object in the YAML files of dir (a sample app
// needs no ordering); it returns "kind/name" of each.
func applyDir(ctx context.Context, c client.Client, dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	var applied []string
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			obj := &unstructured.Unstructured{}
			if err := dec.Decode(&obj.Object); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("decode %s: %w", f, err)
			}
			if len(obj.Object) == 0 {
				continue
			}
			if obj.GetNamespace() == "" {
				obj.SetNamespace("default")
			}
			if err := c.Create(ctx, obj); err != nil {
				return nil, fmt.Errorf("apply %s %s from %s: %w", obj.GetKind(), obj.GetName(), f, err)
			}
			applied = append(applied, obj.GetKind()+"/"+obj.GetName())
		}
	}
	return applied, nil
}
