"""The transport edge: what every call goes through before and after a
servicer or projection handles it, written once.

- `call`: the call record, request ids, admission, readiness and
  authentication, the access log line (`Edge`), shared by gRPC and HTTP;
- `interceptor`: the grpc.aio server interceptor that applies `Edge` to every
  RPC of the kernel's services, and maps errors onto `google.rpc.Status`;
- `status`: domain errors as `google.rpc.Status` and as the JSON error body
  (HTTP, MCP), and a rich status read back (MCP);
- `revocation`: open streams end when their token is revoked.
"""
