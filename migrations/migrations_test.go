package migrations

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestAllIsOrderedAndNamed(t *testing.T) {
	all, err := All()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) == 0 || all[0].Name != "001_secureexec_calls" || !strings.Contains(all[0].SQL, "CREATE TABLE secureexec_calls") {
		t.Fatalf("first migration = %+v", all[0])
	}
	for i := 1; i < len(all); i++ {
		if all[i].Version <= all[i-1].Version {
			t.Fatalf("migrations out of order: %s after %s", all[i].Name, all[i-1].Name)
		}
	}
}

func TestLoad(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   []string
		want    []string // names in order
		wantErr string
	}{
		{"ordered by number, not by text", []string{"010_ten.sql", "002_two.sql", "001_one.sql"}, []string{"001_one", "002_two", "010_ten"}, ""},
		{"other files ignored", []string{"001_one.sql", "README.md"}, []string{"001_one"}, ""},
		{"no number", []string{"one.sql"}, nil, "invalid_migration_name"},
		{"upper case", []string{"001_One.sql"}, nil, "invalid_migration_name"},
		{"duplicate number", []string{"001_one.sql", "001_other.sql"}, nil, "duplicate_migration_version"},
		{"same number, other width", []string{"001_one.sql", "0001_other.sql"}, nil, "duplicate_migration_version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for _, f := range tc.files {
				fsys[f] = &fstest.MapFile{Data: []byte("SELECT 1;")}
			}
			got, err := Load(fsys)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, m := range got {
				names = append(names, m.Name)
			}
			if strings.Join(names, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("names = %v, want %v", names, tc.want)
			}
		})
	}
}
