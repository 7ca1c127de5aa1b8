// Command image builds a container image without a Docker engine and writes
// it as an image archive that `ctr images import` (and `docker load`) read.
// It is how the local node (hack/cluster) and `make demo` get their images on
// a machine with no engine and no registry:
//
//	go run ./hack/image -ref ghcr.io/courier-dev/gateway:dev -o gateway.tar \
//	    -file bin/gateway=/gateway -entrypoint /gateway -user 65532:65532
//
// Layers come from -layer (an existing tar, such as mmdebstrap's root file
// system) and -file (single files, one layer for all of them, added last).
// Every timestamp is zero, so the same inputs give the same image digest and
// a rebuild of an unchanged binary imports nothing new.
//
// go-containerregistry does the image format (manifest, config, digests);
// only the small tar of -file entries is written here.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	var (
		ref        = fs.String("ref", "", "image reference to tag the image with (required)")
		out        = fs.String("o", "", "output archive (required)")
		entrypoint = fs.String("entrypoint", "", "entrypoint, arguments separated by commas")
		cmd        = fs.String("cmd", "", "default arguments, separated by commas")
		user       = fs.String("user", "", "user:group the process runs as")
		workdir    = fs.String("workdir", "", "working directory")
		arch       = fs.String("arch", "amd64", "architecture recorded in the image config")
		layers     multi
		files      multi
		envs       multi
		labels     multi
	)
	fs.Var(&layers, "layer", "a tar file to add as a layer (repeatable, in order)")
	fs.Var(&files, "file", "src=dst[:mode]: a file to add at dst (repeatable; one layer for all, added last)")
	fs.Var(&envs, "env", "K=V environment variable (repeatable)")
	fs.Var(&labels, "label", "K=V image label (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *ref == "" || *out == "" {
		return errors.New("-ref and -o are required")
	}
	tag, err := name.NewTag(*ref)
	if err != nil {
		return fmt.Errorf("-ref %q: %w", *ref, err)
	}

	img := empty.Image
	for _, l := range layers {
		layer, err := tarball.LayerFromFile(l)
		if err != nil {
			return fmt.Errorf("-layer %s: %w", l, err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			return fmt.Errorf("-layer %s: %w", l, err)
		}
	}
	if len(files) > 0 {
		data, err := filesTar(files)
		if err != nil {
			return err
		}
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		})
		if err != nil {
			return fmt.Errorf("-file layer: %w", err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			return fmt.Errorf("-file layer: %w", err)
		}
	}

	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", *arch
	cf.Config.Entrypoint = split(*entrypoint)
	cf.Config.Cmd = split(*cmd)
	cf.Config.User = *user
	cf.Config.WorkingDir = *workdir
	cf.Config.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, envs...)
	if len(labels) > 0 {
		cf.Config.Labels = map[string]string{}
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			cf.Config.Labels[k] = v
		}
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return fmt.Errorf("set config: %w", err)
	}

	tmp := *out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		return fmt.Errorf("write %s: %w", *out, err)
	}
	if err := os.Rename(tmp, *out); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s %s %s\n", tag, digest, *out)
	return err
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// filesTar writes the -file entries, with their parent directories, as one
// tar owned by root with zero timestamps, in a fixed order so equal inputs
// give an equal layer digest.
func filesTar(files []string) ([]byte, error) {
	type entry struct {
		dst  string
		mode int64
		data []byte
	}
	var entries []entry
	dirs := map[string]bool{}
	for _, f := range files {
		src, dst, ok := strings.Cut(f, "=")
		if !ok || !strings.HasPrefix(dst, "/") {
			return nil, fmt.Errorf("-file %q: want src=/absolute/dst[:mode]", f)
		}
		var mode int64 = 0o755
		if d, m, ok := strings.Cut(dst, ":"); ok {
			dst = d
			if _, err := fmt.Sscanf(m, "%o", &mode); err != nil {
				return nil, fmt.Errorf("-file %q: mode %q: %w", f, m, err)
			}
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, fmt.Errorf("-file %q: %w", f, err)
		}
		for d := path.Dir(dst); d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
		entries = append(entries, entry{dst: dst, mode: mode, data: data})
	}
	// Sorted paths put every parent before its children.
	sortedDirs := slices.Sorted(maps.Keys(dirs))
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.dst, b.dst) })

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range sortedDirs {
		hdr := &tar.Header{Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, Typeflag: tar.TypeDir, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
	}
	for _, e := range entries {
		hdr := &tar.Header{Name: strings.TrimPrefix(e.dst, "/"), Mode: e.mode, Size: int64(len(e.data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
