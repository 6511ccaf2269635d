// composecheck validates a Compose file the way `docker compose config` does, with
// compose-go (the Compose Specification's reference loader): schema validation,
// interpolation from an env file, and the model's consistency checks (depends_on targets,
// networks, volumes…). It prints the services with their published ports as JSON, for the
// tests to compare with etar's settings.
//
//	go run ./tools/composecheck -env .env.example docker-compose.yml
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/compose-spec/compose-go/v2/cli"
)

type service struct {
	Ports      []uint32          `json:"ports"`
	Targets    []uint32          `json:"targets"`
	Hostname   string            `json:"hostname,omitempty"`
	Command    []string          `json:"command,omitempty"`
	Image      string            `json:"image,omitempty"`
	Build      string            `json:"build,omitempty"`
	Dockerfile string            `json:"dockerfile,omitempty"`
	Profiles   []string          `json:"profiles,omitempty"`
	Health     bool              `json:"healthcheck"`
	DependsOn  map[string]string `json:"depends_on"`
	Env        map[string]string `json:"environment"`
}

func main() {
	envFile := flag.String("env", ".env.example", "env file used for interpolation")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: composecheck [-env FILE] docker-compose.yml")
		os.Exit(2)
	}
	file, _ := filepath.Abs(flag.Arg(0))
	options, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(filepath.Dir(file)),
		cli.WithEnvFiles(*envFile),
		cli.WithDotEnv,
		cli.WithProfiles([]string{"*"}),
		cli.WithName("etar"),
	)
	if err != nil {
		fail(err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	out := map[string]service{}
	names := project.ServiceNames()
	sort.Strings(names)
	for _, name := range names {
		s := project.Services[name]
		item := service{Image: s.Image, Hostname: s.Hostname, Command: s.Command,
			Profiles: s.Profiles, Health: s.HealthCheck != nil &&
				!s.HealthCheck.Disable, DependsOn: map[string]string{}, Env: map[string]string{}}
		for _, p := range s.Ports {
			var published uint64
			fmt.Sscan(p.Published, &published)
			item.Ports = append(item.Ports, uint32(published))
			item.Targets = append(item.Targets, p.Target)
		}
		if s.Build != nil {
			item.Build, item.Dockerfile = s.Build.Context, s.Build.Dockerfile
		}
		for dep, cfg := range s.DependsOn {
			item.DependsOn[dep] = cfg.Condition
		}
		for key, value := range s.Environment {
			if value != nil {
				item.Env[key] = *value
			}
		}
		out[name] = item
	}
	encoded, _ := json.MarshalIndent(out, "", "  ")
	fmt.Println(string(encoded))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "invalid compose file:", err)
	os.Exit(1)
}
