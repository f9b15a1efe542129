package daemon

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
)

const testDebounce = 30 * time.Millisecond

// watchFor starts a configWatch on path; t.Cleanup stops it.
func watchFor(t *testing.T, path string) <-chan struct{} {
	t.Helper()
	cw, err := newConfigWatch(path, zap.NewNop())
	if err != nil {
		t.Fatalf("newConfigWatch(%s): %v", path, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); cw.close() })
	return cw.run(ctx, testDebounce)
}

// wantChange waits for one change notice, then makes sure no second one follows (one
// save is one reload).
func wantChange(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no change noticed within 5s", what)
	}
	wantQuiet(t, ch, what+" (a second notice)")
}

// wantQuiet fails when a change notice comes within 10 debounce periods.
func wantQuiet(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
		t.Fatalf("%s: a change was noticed; want none", what)
	case <-time.After(10 * testDebounce):
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// replace writes data beside path and renames it over path, as editors do.
func replace(t *testing.T, path, data string) {
	t.Helper()
	write(t, path+".tmp", data)
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// repoint points the symlink link at dest atomically (a new link renamed over it, as
// `ln -sfn` and Kubernetes do).
func repoint(t *testing.T, link, dest string) {
	t.Helper()
	tmp := link + ".tmp"
	if err := os.Symlink(dest, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
}

func TestConfigWatchPlainFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sgd.yaml")
	write(t, path, "a")
	ch := watchFor(t, path)
	write(t, path, "b")
	wantChange(t, ch, "file rewritten in place")
	replace(t, path, "c")
	wantChange(t, ch, "file replaced by rename")
	write(t, filepath.Join(filepath.Dir(path), "other.yaml"), "x")
	wantQuiet(t, ch, "another file in the directory written")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	wantQuiet(t, ch, "file removed (nothing to load)")
	write(t, path, "d")
	wantChange(t, ch, "file back after its removal")
}

// TestConfigWatchSymlink: the config path is a symlink to a file in another directory.
// Saving the target (either way) is a change; so is pointing the link at a new target,
// after which the new target is watched and the old one is not.
func TestConfigWatchSymlink(t *testing.T) {
	linkDir, dirA, dirB := t.TempDir(), t.TempDir(), t.TempDir()
	a, b := filepath.Join(dirA, "real.yaml"), filepath.Join(dirB, "real.yaml")
	write(t, a, "a")
	write(t, b, "b")
	link := filepath.Join(linkDir, "sgd.yaml")
	if err := os.Symlink(a, link); err != nil {
		t.Fatal(err)
	}
	ch := watchFor(t, link)

	replace(t, a, "a2")
	wantChange(t, ch, "target replaced by rename")
	write(t, a, "a3")
	wantChange(t, ch, "target rewritten in place")
	write(t, b, "b2")
	wantQuiet(t, ch, "a file that is not the target written")

	repoint(t, link, b)
	wantChange(t, ch, "link pointed at a new target")
	write(t, b, "b3")
	wantChange(t, ch, "new target rewritten in place")
	replace(t, b, "b4")
	wantChange(t, ch, "new target replaced by rename")
	write(t, a, "a4")
	wantQuiet(t, ch, "old target written after the link moved away")

	// Not atomic: the link removed, then made again (older `ln -sf`).
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(a, link); err != nil {
		t.Fatal(err)
	}
	wantChange(t, ch, "link removed and made again")
	write(t, a, "a5")
	wantChange(t, ch, "target after the link was made again")
}

// TestConfigWatchConfigMap: the layout Kubernetes mounts a ConfigMap with — the file is a
// link through the ..data directory link into a timestamped directory, and an update
// makes a new directory, swaps ..data by rename and deletes the old directory.
func TestConfigWatchConfigMap(t *testing.T) {
	dir := t.TempDir()
	mkVersion := func(name, data string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, name, "sgd.yaml"), data)
	}
	mkVersion("..2026_11_01_00_00_00.1", "v1")
	if err := os.Symlink("..2026_11_01_00_00_00.1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "sgd.yaml")
	if err := os.Symlink("..data/sgd.yaml", path); err != nil {
		t.Fatal(err)
	}
	real, _ := filepath.EvalSymlinks(dir) // t.TempDir may sit behind a symlink itself
	target, names, err := resolve(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(real, "..2026_11_01_00_00_00.1", "sgd.yaml"); target != want {
		t.Errorf("resolve(%s) target = %s; want %s", path, target, want)
	}
	if !slices.Contains(names, filepath.Join(real, "sgd.yaml")) || !slices.Contains(names, filepath.Join(real, "..data")) {
		t.Errorf("resolve(%s) names = %v; want both links and the target", path, names)
	}

	ch := watchFor(t, path)
	mkVersion("..2026_11_01_00_01_00.2", "v2")
	repoint(t, filepath.Join(dir, "..data"), "..2026_11_01_00_01_00.2")
	if err := os.RemoveAll(filepath.Join(dir, "..2026_11_01_00_00_00.1")); err != nil {
		t.Fatal(err)
	}
	wantChange(t, ch, "ConfigMap update (..data swapped, old version deleted)")
	write(t, filepath.Join(dir, "..2026_11_01_00_01_00.2", "sgd.yaml"), "v2 edited")
	wantChange(t, ch, "new version's file rewritten")
}

func TestResolveSymlinks(t *testing.T) {
	dir, _ := filepath.EvalSymlinks(t.TempDir())
	write(t, filepath.Join(dir, "f"), "x")
	for _, l := range [][2]string{{"rel", "f"}, {"abs", filepath.Join(dir, "f")}, {"two", "rel"}, {"loop1", "loop2"}, {"loop2", "loop1"}, {"dangling", "nope"}} {
		if err := os.Symlink(l[1], filepath.Join(dir, l[0])); err != nil {
			t.Fatal(err)
		}
	}
	j := func(n string) string { return filepath.Join(dir, n) }
	for _, tc := range []struct {
		path, target string
		names        []string
		err          bool
	}{
		{j("f"), j("f"), []string{j("f")}, false},
		{j("rel"), j("f"), []string{j("rel"), j("f")}, false},
		{j("two"), j("f"), []string{j("two"), j("rel"), j("f")}, false},
		{j("abs"), j("f"), []string{j("abs"), j("f")}, false},
		{dir + "/./f", j("f"), []string{j("f")}, false},
		{dir + "/sub/../f", "", []string{j("sub")}, true}, // like the kernel: sub must exist
		{j("dangling"), "", []string{j("dangling"), j("nope")}, true},
		{j("missing"), "", []string{j("missing")}, true},
	} {
		target, names, err := resolve(tc.path)
		if target != tc.target || !slices.Equal(names, tc.names) || (err != nil) != tc.err {
			t.Errorf("resolve(%s) = %q, %q, %v; want %q, %q, error %v", tc.path, target, names, err, tc.target, tc.names, tc.err)
		}
	}
	if _, _, err := resolve(j("loop1")); err == nil {
		t.Errorf("resolve(loop1) found a target; want an error (a symlink loop)")
	}
}
