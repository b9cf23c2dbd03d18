FROM debian:bookworm
RUN <<EOF
set -e
apt-get update
apt-get install -y curl
EOF
RUN <<-'SCRIPT' bash
	echo "literal $HOME"
	SCRIPT
COPY <<conf.ini <<"raw.txt" /etc/app/
[main]
home=$HOME
conf.ini
untouched $PATH
raw.txt
RUN python3 <<PY > /out.txt
print("hi")
PY
ONBUILD RUN <<EOF
echo onbuild
EOF
ADD --chmod=600 <<key /root/.ssh/id
secret
key
RUN 3<<IN cat <&3
fd three
IN
