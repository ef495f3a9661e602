// Command consul-agent is a thin launcher around HashiCorp Consul's own CLI,
// built from the released github.com/hashicorp/consul module (see go.mod).
// Consul's main module cannot be `go install`ed (its go.mod has replace
// directives), so this module requires it as a library and dispatches to
// Consul's command registry. It exists only so the Rust test-support crate can
// start a private, loopback-only agent per test, e.g.:
//
//	consul-agent agent -dev -bind 127.0.0.1 -client 127.0.0.1 \
//	    -http-port P -dns-port -1 -grpc-port -1 -grpc-tls-port -1 \
//	    -server-port S -serf-lan-port L -serf-wan-port W
//
// Every other consul subcommand (members, acl ..., version) works as well.
package main

import (
	"fmt"
	"io"
	"log"
	"os"
	"sort"

	"github.com/hashicorp/consul/command"
	consulcli "github.com/hashicorp/consul/command/cli"
	"github.com/hashicorp/consul/command/version"
	mcli "github.com/mitchellh/cli"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	// Consul logs through hclog; silence the stdlib logger like consul's main does.
	log.SetOutput(io.Discard)

	ui := &consulcli.BasicUI{
		BasicUi: mcli.BasicUi{Writer: os.Stdout, ErrorWriter: os.Stderr},
	}
	cmds := command.RegisteredCommands(ui)
	names := make([]string, 0, len(cmds))
	for name := range cmds {
		names = append(names, name)
	}
	sort.Strings(names)

	c := &mcli.CLI{
		Args:        args,
		Commands:    cmds,
		Name:        "consul-agent",
		HelpFunc:    mcli.FilteredHelpFunc(names, mcli.BasicHelpFunc("consul-agent")),
		HelpWriter:  os.Stdout,
		ErrorWriter: os.Stderr,
	}
	if c.IsVersion() {
		return version.New(ui).Run(nil)
	}
	code, err := c.Run()
	if err != nil {
		fmt.Fprintf(os.Stderr, "consul-agent: %v\n", err)
		return 1
	}
	return code
}
