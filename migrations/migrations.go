// Package migrations holds the SQL migrations of the SecureExec database, embedded in the
// binary. Adding one is adding a file: NNN_short_name.sql, the next number, applied once, in
// its own transaction, in number order, by store.Migrate (`secureexec migrate` and at start).
package migrations

import (
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
)

// FS is every migration file, embedded at build time.
//
//go:embed *.sql
var FS embed.FS

// Migration is one SQL file: Name (the file name without .sql) is the key recorded in
// schema_migrations, so a file must never be renamed once released.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

var fileName = regexp.MustCompile(`^([0-9]{3,})_([a-z0-9_]+)\.sql$`)

// All returns the embedded migrations in the order they must be applied.
func All() ([]Migration, error) {
	return Load(FS)
}

// Load reads migrations from the top level of fsys, checking that every .sql file is named
// NNN_name.sql and that no version number is used twice.
func Load(fsys fs.FS) ([]Migration, error) {
	files, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("migrations: list: %w", err)
	}
	out := make([]Migration, 0, len(files))
	seen := make(map[int]string, len(files))
	for _, f := range files {
		m := fileName.FindStringSubmatch(f)
		if m == nil {
			return nil, fmt.Errorf("migrations: %q: invalid_migration_name (want NNN_name.sql)", f)
		}
		var version int
		if _, err := fmt.Sscanf(m[1], "%d", &version); err != nil {
			return nil, fmt.Errorf("migrations: %q: invalid_migration_name: %w", f, err)
		}
		if prev, dup := seen[version]; dup {
			return nil, fmt.Errorf("migrations: %q and %q: duplicate_migration_version", prev, f)
		}
		seen[version] = f
		body, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, fmt.Errorf("migrations: read %q: %w", f, err)
		}
		out = append(out, Migration{Version: version, Name: f[:len(f)-len(".sql")], SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}
