ARG A=1 B="two words" C
FROM busybox
ARG A
ARG D=${A:-default}-${B:+set}
ENV E=${D} F='$literal' G="${UNSET-dash}" H=a\ b
ENV P=/usr/local/bin
ENV TRIM=${P#*/} TRIMALL=${P##*/} SUF=${P%/*} SUFALL=${P%%/l*}
ENV REPL=${P/usr/opt} REPLALL=${P//\//:}
WORKDIR /home/${USER:-root}
USER ${UID:-1000}
RUN echo "$E $F $G $H"
COPY ["with space.txt", "/dst dir/"]
COPY --exclude=*.tmp --parents --link src/ /app/
HEALTHCHECK NONE
HEALTHCHECK --start-interval=1s CMD wget -q -O- http://localhost || exit 1
