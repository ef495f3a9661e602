package echopb

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Server is the echo service every interop server registers: Say answers with the
// message and the server's name, which tells a client which instance it reached.
type Server struct {
	UnimplementedEchoServer
	Name string
	// Delay is how long Say takes, as a service waiting on its own I/O; zero answers
	// at once. A call whose context ends first returns its error.
	Delay time.Duration
	// Failing, while set, makes Say answer UNAVAILABLE at once, as a service whose own
	// dependency (a database) is down: the process and its connections stay healthy.
	Failing atomic.Bool
}

// Say echoes the request's message with the server's name, after Delay.
func (s *Server) Say(ctx context.Context, r *SayRequest) (*SayReply, error) {
	if s.Failing.Load() {
		return nil, status.Error(codes.Unavailable, fmt.Sprintf("%s: failing on purpose (its dependency is down)", s.Name))
	}
	if s.Delay > 0 {
		t := time.NewTimer(s.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &SayReply{Message: r.Message, Server: s.Name}, nil
}
