  from   BUSYBOX   as   Base  
	run	echo	tabs
RUN echo \\
RUN echo trailing \   
RUN ["sh", "-c", "echo json \"quoted\""]
RUN [ "not", json ]
CMD
ENTRYPOINT []
EXPOSE ${PORT:-80}
LABEL "multi word key"="v" k2= k3=""
ENV empty=""
RUN --network=none --security=sandbox true
RUN -- --not-a-flag
COPY --from=base / /
ADD --keep-git-dir=true --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://github.com/moby/buildkit.git#v0.10.1 /buildkit
ADD --unpack=false a.tar /x
