package echopb

import "context"

// Server is the echo service every interop server registers: Say answers with the
// message and the server's name, which tells a client which instance it reached.
type Server struct {
	UnimplementedEchoServer
	Name string
}

// Say echoes the request's message with the server's name.
func (s *Server) Say(_ context.Context, r *SayRequest) (*SayReply, error) {
	return &SayReply{Message: r.Message, Server: s.Name}, nil
}
