# Sourced by the bench scripts: nginx as a plain reverse proxy (2 workers, upstream keep-alive),
# the peer kube-iap is measured against, and the wait for a server to answer.
#
#   wait_up URL [TRIES]    (every 0.1 s, 100 tries unless given; exits the script if it never answers)
wait_up() {
  for _ in $(seq 1 "${2:-100}"); do curl -fsS -o /dev/null -H "Host: bench.local" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "not answering: $1" >&2; exit 1
}

#
#   start_nginx WORKDIR LISTEN_PORT BACKEND_PORT [BARE_PORT]   (appends nginx's pid to pids)
#
# On LISTEN_PORT nginx sends the backend the head kube-iap sends: Host, X-Forwarded-For/-Proto/
# -Host and a request id (ingress-nginx sends these and more by default), so the backend does the
# same work behind both. The id is nginx's connection and request counters, as cheap as
# kube-iap's: its random `$request_id` cost it about a sixth of its throughput here. On
# BARE_PORT, when given, it sends only Host and X-Forwarded-For: the least a reverse proxy does,
# for reference.
start_nginx() {
  local work=$1/nginx listen=$2 backend=$3 bare=${4:-}
  local backend_headers='
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Request-Id $connection-$connection_requests;'
  mkdir -p "$work"
  cat > "$work/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $work/nginx.pid;
error_log $work/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/body;
  proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fastcgi;
  uwsgi_temp_path $work/uwsgi;
  scgi_temp_path $work/scgi;
  upstream app { server 127.0.0.1:$backend; keepalive 128; }
CONF
  {
    server_block "$listen" "$backend_headers"
    [ -z "$bare" ] || server_block "$bare" ""
    echo "}"
  } >> "$work/nginx.conf"
  nginx -e "$work/error.log" -p "$work" -c "$work/nginx.conf" &
  pids+=($!)
}

# One proxying server block on 127.0.0.1:PORT, sending Host, X-Forwarded-For and EXTRA.
server_block() {
  cat <<CONF
  server {
    listen 127.0.0.1:$1;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;$2
    }
  }
CONF
}
