package controller

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sgd-firewall/sgd/internal/rules"
)

// TestREADMEExamples loads every YAML config block in the README, and the example config
// the installer ships, the way `sgd run` and `sgd check` do (the file as the one source:
// SG model and daemon: section), so that what users paste works.
func TestREADMEExamples(t *testing.T) {
	for _, file := range []string{"../../README.md"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		blocks := yamlBlocks(string(data))
		if len(blocks) == 0 {
			t.Fatalf("%s has no ```yaml blocks", file)
		}
		for i, b := range blocks {
			path := filepath.Join(t.TempDir(), "block.yaml")
			if err := os.WriteFile(path, []byte(b), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Load(context.Background(), rules.Env{}, NewFile(path)); err != nil {
				t.Errorf("%s yaml block %d: %v", file, i, err)
			}
		}
	}
	for _, file := range []string{"../../examples/sgd.yaml", "../rules/testdata/spec-example.yaml"} {
		if _, err := Load(context.Background(), rules.Env{}, NewFile(file)); err != nil {
			t.Errorf("Load(%s) = %v", file, err)
		}
	}
}

// yamlBlocks returns the bodies of the ```yaml fenced blocks of a Markdown text.
func yamlBlocks(md string) []string {
	var out []string
	for {
		i := strings.Index(md, "```yaml\n")
		if i < 0 {
			return out
		}
		md = md[i+len("```yaml\n"):]
		j := strings.Index(md, "```")
		if j < 0 {
			return out
		}
		out = append(out, md[:j])
		md = md[j:]
	}
}
