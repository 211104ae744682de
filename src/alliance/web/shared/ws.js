// GraphQL subscriptions over WebSocket at /graphql: a minimal graphql-transport-ws client (the
// protocol of graphql-ws), one socket per subscription. Queries and mutations stay on HTTP (graphql.js).
//
//   connection_init {Authorization} → connection_ack → subscribe {id, payload} → next… → complete
//   (or error); a ping is answered with a pong.

export const PROTOCOL = "graphql-transport-ws";
const ID = "1";

// Subscribes to `query`: `onStarted()` once the server accepted the connection, `onData(data)` per
// result, and `onEnd(errors)` exactly once when the subscription is over for any reason (its errors,
// the server completed it, the socket closed; `errors` is [] when none were given) — but not after
// the caller's own `close()`.
export function subscribe({ query, variables = {}, token }, { onStarted, onData, onEnd }) {
  const url = new URL("/graphql", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(url, PROTOCOL);
  let ended = false;
  const send = (message) => socket.send(JSON.stringify(message));
  const end = (errors = []) => {
    if (ended) return;
    ended = true;
    if (socket.readyState === WebSocket.OPEN) socket.close(1000);
    onEnd(errors);
  };

  socket.onopen = () => send({ type: "connection_init", payload: token ? { Authorization: `Bearer ${token}` } : {} });
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    switch (message.type) {
      case "ping":
        send({ type: "pong" });
        break;
      case "connection_ack":
        send({ id: ID, type: "subscribe", payload: { query, variables } });
        onStarted();
        break;
      case "next":
        if (message.payload.errors?.length) end(message.payload.errors);
        else onData(message.payload.data);
        break;
      case "error":
        end(message.payload);
        break;
      case "complete":
        end();
        break;
    }
  };
  socket.onclose = () => end();

  return {
    close() {
      ended = true;
      // Closing a socket that is still connecting logs an error in Chromium: wait for it to open.
      if (socket.readyState === WebSocket.CONNECTING) socket.onopen = () => socket.close(1000);
      else socket.close(1000);
    },
  };
}
